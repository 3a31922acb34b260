// The atlas: learned and semantic-only 2-D maps of a bundle's models and datasets (canvas,
// zoom with the wheel, drag to pan, double-click to reset), searchable; a click shows the node's
// top-K counterparts. Works served (data from GET /atlas) and as a static file (data inlined).
const ModelLensAtlas = (function () {
  'use strict';
  const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
    '#17becf', '#bcbd22', '#393b79', '#637939', '#843c39'];
  const OTHER = 'rgba(150,150,150,0.45)';
  const SPACES = [['learned', "Learned: the scorer's representation"], ['semantic', 'Semantic only: description embeddings']];
  const fmtB = (b) => `${Number(Number(b).toPrecision(3))}B`;
  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'text') e.textContent = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
    }
    e.append(...kids);
    return e;
  };

  class Panel {
    constructor(atlas, space, label) {
      this.atlas = atlas; this.space = space;
      this.canvas = el('canvas', { 'data-space': space, 'aria-label': label, role: 'img' });
      this.tip = el('div', { class: 'tooltip', hidden: '' });
      this.empty = el('p', { class: 'empty', hidden: '', text: 'This bundle carries no description embeddings.' });
      this.fig = el('figure', { class: 'atlas-map' }, el('figcaption', { text: label }), this.canvas, this.tip, this.empty);
      this.reset();
      this.bind();
    }
    reset() { this.k = 1; this.cx = 0; this.cy = 0; }
    get xy() { return this.atlas.data[this.atlas.kind][this.space]; }
    size() {
      const r = this.canvas.getBoundingClientRect();
      return { w: r.width, h: r.height, base: Math.max(10, Math.min(r.width, r.height) / 2 - 12) };
    }
    toScreen(x, y) { const { w, h, base } = this.size(); return [w / 2 + (x - this.cx) * this.k * base, h / 2 - (y - this.cy) * this.k * base]; }
    toWorld(sx, sy) { const { w, h, base } = this.size(); return [this.cx + (sx - w / 2) / (this.k * base), this.cy - (sy - h / 2) / (this.k * base)]; }
    nearest(sx, sy, radius = 9) {
      const xy = this.xy; if (!xy) return -1;
      let best = -1, bd = radius * radius;
      const pref = this.atlas.found; // a click on the searched node opens it (points can coincide)
      if (pref >= 0) { const [px, py] = this.toScreen(xy[pref][0], xy[pref][1]); if ((px - sx) ** 2 + (py - sy) ** 2 <= 16) return pref; }
      for (let i = 0; i < xy.length; i++) {
        const [px, py] = this.toScreen(xy[i][0], xy[i][1]);
        const d = (px - sx) ** 2 + (py - sy) ** 2;
        if (d < bd) { bd = d; best = i; }
      }
      return best;
    }
    bind() {
      const c = this.canvas; let drag = null;
      const pos = (e) => { const r = c.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
      c.addEventListener('wheel', (e) => {
        e.preventDefault();
        const [sx, sy] = pos(e); const [wx, wy] = this.toWorld(sx, sy);
        this.k = Math.min(400, Math.max(0.5, this.k * Math.exp(-e.deltaY * 0.0015)));
        const [nx, ny] = this.toWorld(sx, sy); this.cx += wx - nx; this.cy += wy - ny;
        this.draw();
      }, { passive: false });
      c.addEventListener('pointerdown', (e) => { drag = { p: pos(e), c: [this.cx, this.cy], moved: false }; c.setPointerCapture(e.pointerId); });
      c.addEventListener('pointermove', (e) => {
        const [sx, sy] = pos(e);
        if (drag) {
          const { base } = this.size(); const dx = sx - drag.p[0], dy = sy - drag.p[1];
          if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
          if (drag.moved) { this.cx = drag.c[0] - dx / (this.k * base); this.cy = drag.c[1] + dy / (this.k * base); this.draw(); }
          return;
        }
        const i = this.nearest(sx, sy);
        if (i < 0) { this.tip.hidden = true; return; }
        this.tip.hidden = false; this.tip.textContent = this.atlas.label(i);
        this.tip.style.left = `${sx}px`; this.tip.style.top = `${sy + 30}px`;
      });
      c.addEventListener('pointerleave', () => { this.tip.hidden = true; });
      c.addEventListener('pointerup', (e) => {
        const d = drag; drag = null;
        if (d && !d.moved) { const [sx, sy] = pos(e); const i = this.nearest(sx, sy); if (i >= 0) this.atlas.select(i); }
      });
      c.addEventListener('dblclick', () => { this.reset(); this.draw(); });
    }
    centerOn(i, k = 6) { const p = this.xy && this.xy[i]; if (!p) return; this.cx = p[0]; this.cy = p[1]; this.k = Math.max(this.k, k); }
    draw() {
      const c = this.canvas, xy = this.xy; const dpr = window.devicePixelRatio || 1;
      const { w, h } = this.size();
      c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
      const g = c.getContext('2d'); g.setTransform(dpr, 0, 0, dpr, 0, 0); g.clearRect(0, 0, w, h);
      this.empty.hidden = !!xy; this.tip.hidden = true;
      if (!xy) return;
      const slots = this.atlas.slots; const r = Math.min(5, 1.6 + Math.log2(this.k) * 0.6);
      for (const pass of [0, 1]) { // the "other" colour first, coloured points on top
        for (let i = 0; i < xy.length; i++) {
          const s = slots[i]; if ((s < PALETTE.length) !== (pass === 1)) continue;
          const [x, y] = this.toScreen(xy[i][0], xy[i][1]);
          if (x < -5 || y < -5 || x > w + 5 || y > h + 5) continue;
          g.fillStyle = s < PALETTE.length ? PALETTE[s] : OTHER;
          g.fillRect(x - r / 2, y - r / 2, r, r);
        }
      }
      const mark = (i, color, ring) => {
        if (i < 0 || !xy[i]) return;
        const [x, y] = this.toScreen(xy[i][0], xy[i][1]);
        g.beginPath(); g.arc(x, y, ring, 0, 2 * Math.PI); g.lineWidth = 2.5; g.strokeStyle = color; g.stroke();
        g.font = '12px system-ui, sans-serif'; g.fillStyle = '#1d2330';
        g.fillText(this.atlas.names[i], x + ring + 3, y - ring);
      };
      if (this.atlas.found !== this.atlas.selected) mark(this.atlas.found, '#b3261e', 10);
      mark(this.atlas.selected, '#111', 7);
    }
  }

  class Atlas {
    constructor(root, data, opts) {
      this.root = root; this.data = data; this.opts = opts || {};
      this.kind = 'models'; this.color = 'family'; this.selected = -1; this.found = -1;
      this.status = el('span', { class: 'muted atlas-status' });
      this.buildControls();
      this.panels = SPACES.map(([s, label]) => new Panel(this, s, label));
      this.legend = el('div', { class: 'legend' });
      this.info = el('aside', { class: 'atlas-side', id: 'atlas-info', 'aria-live': 'polite' });
      root.replaceChildren(this.controls, this.legend, el('div', { class: 'atlas-body' }, ...this.panels.map((p) => p.fig), this.info));
      this.setKind('models');
      window.addEventListener('resize', () => this.redraw());
    }
    get names() { return this.data[this.kind].name; }
    buildControls() {
      this.kindButtons = ['models', 'datasets'].map((k) => el('button', { type: 'button', 'data-kind': k, 'aria-pressed': 'false', text: k, onclick: () => this.setKind(k) }));
      this.colorSelect = el('select', { id: 'atlas-color', onchange: () => { this.color = this.colorSelect.value; this.recolor(); } });
      this.search = el('input', { id: 'atlas-search', type: 'search', list: 'atlas-names', placeholder: 'find a model…', autocomplete: 'off' });
      this.names_dl = el('datalist', { id: 'atlas-names' });
      this.search.addEventListener('input', () => this.suggest());
      this.search.addEventListener('change', () => this.find(this.search.value));
      this.search.addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); this.find(this.search.value); } });
      const d = this.data;
      const meta = `${d.models.name.length.toLocaleString()} models · ${d.datasets.name.length.toLocaleString()} datasets · ${d.method} · bundle ${String(d.bundle).slice(0, 12)}`;
      this.controls = el('div', { class: 'atlas-controls' },
        el('div', { class: 'seg', role: 'group', 'aria-label': 'what to map' }, ...this.kindButtons),
        el('label', {}, 'Colour by', this.colorSelect),
        el('label', {}, 'Search', this.search), this.names_dl,
        el('span', { class: 'muted', text: meta }), this.status);
    }
    setKind(k) {
      this.kind = k; this.selected = -1; this.found = -1;
      for (const b of this.kindButtons) b.setAttribute('aria-pressed', String(b.dataset.kind === k));
      const opts = k === 'models' ? ['modality', 'family'] : ['task', 'modality'];
      this.colorSelect.replaceChildren(...opts.map((o) => el('option', { value: o, text: o })));
      this.color = opts[0]; this.search.placeholder = k === 'models' ? 'find a model…' : 'find a dataset…';
      this.search.value = ''; this.names_dl.replaceChildren();
      for (const p of this.panels) p.reset();
      this.info.replaceChildren(el('p', { class: 'muted', text: `Click a ${k === 'models' ? 'model' : 'dataset'} to see its ${k === 'models' ? 'best datasets' : 'top models'}. Wheel to zoom, drag to pan, double-click to reset.` }));
      this.recolor();
    }
    vocabFor(key) { return key === 'family' ? this.data.families : key === 'task' ? this.data.tasks : this.data.modalities; }
    recolor() {
      const vals = this.data[this.kind][this.color]; const counts = new Map();
      for (const v of vals) if (v > 0) counts.set(v, (counts.get(v) || 0) + 1);
      const top = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, PALETTE.length);
      const slot = new Map(top.map(([v], i) => [v, i]));
      this.slots = Int32Array.from(vals, (v) => (slot.has(v) ? slot.get(v) : PALETTE.length));
      const names = this.vocabFor(this.color);
      const other = vals.length - top.reduce((a, [, n]) => a + n, 0);
      this.legend.replaceChildren(...top.map(([v, n], i) => el('span', {}, el('i', { style: `background:${PALETTE[i]}` }), `${names[v]} (${n})`)),
        el('span', {}, el('i', { style: `background:${OTHER}` }), `other (${other})`));
      this.redraw();
    }
    redraw() { for (const p of this.panels) p.draw(); }
    label(i) {
      const d = this.data[this.kind];
      if (this.kind === 'models') return `${d.name[i]} · ${this.data.families[d.family[i]] || '?'}${d.params[i] != null ? ` · ${fmtB(d.params[i])}` : ''}`;
      return `${d.name[i]} · ${this.data.tasks[d.task[i]] || '?'}`;
    }
    suggest() {
      const q = this.search.value.trim().toLowerCase(); if (q.length < 2) { this.names_dl.replaceChildren(); return; }
      const out = [];
      for (const n of this.names) { if (n.toLowerCase().includes(q)) { out.push(n); if (out.length >= 30) break; } }
      this.names_dl.replaceChildren(...out.map((n) => el('option', { value: n })));
    }
    indexOf(name) {
      const q = String(name).trim().toLowerCase(); if (!q) return -1;
      const names = this.names; let sub = -1;
      for (let i = 0; i < names.length; i++) { const n = names[i].toLowerCase(); if (n === q) return i; if (sub < 0 && n.includes(q)) sub = i; }
      return sub;
    }
    find(name) {
      const i = this.indexOf(name);
      if (i < 0) { this.status.textContent = `no ${this.kind === 'models' ? 'model' : 'dataset'} matches ${JSON.stringify(name)}`; return -1; }
      this.found = i;
      for (const p of this.panels) p.centerOn(i);
      this.status.textContent = `found ${this.names[i]}: click the ringed point to see its ${this.kind === 'models' ? 'best datasets' : 'top models'}`;
      this.redraw();
      return i;
    }
    // The CSS-pixel position of node ``name`` (or index) on a panel, relative to its canvas.
    screenPosition(space, name) {
      const i = typeof name === 'number' ? name : this.indexOf(name); const p = this.panels.find((x) => x.space === space);
      if (i < 0 || !p || !p.xy) return null; const [x, y] = p.toScreen(p.xy[i][0], p.xy[i][1]); return { x, y, index: i };
    }
    select(i, kind) {
      if (kind && kind !== this.kind) this.setKind(kind);
      this.selected = i; this.redraw();
      const d = this.data[this.kind]; const other = this.kind === 'models' ? 'datasets' : 'models';
      const head = [el('h2', { text: d.name[i] })];
      const facts = [];
      if (this.kind === 'models') {
        facts.push(`family ${this.data.families[d.family[i]] || 'unknown'}`, d.params[i] != null ? `${fmtB(d.params[i])} parameters` : 'size unknown',
          `modality ${this.data.modalities[d.modality[i]] || 'unknown'}`, d.learned_id[i] ? 'learned ID' : 'no learned ID ([UNK])');
      } else {
        facts.push(`task ${this.data.tasks[d.task[i]] || 'unknown'}`, `modality ${this.data.modalities[d.modality[i]] || 'unknown'}`, d.learned_id[i] ? 'learned ID' : 'no learned ID ([UNK])');
      }
      head.push(el('p', { class: 'muted', text: facts.join(' · ') }));
      const top = d.top[i] || [];
      const on = this.data[other];
      const list = el('ol', { id: 'atlas-topk' }, ...top.map((t) => {
        const j = t[0];
        const extra = this.kind === 'models' ? ` — rank ${t[1]} of ${t[2]} (${this.data.tasks[on.task[j]] || '?'})` : ` — ${Number(t[1]).toFixed(3)}`;
        const b = el('button', { type: 'button', text: on.name[j], onclick: () => { this.select(j, other); for (const p of this.panels) p.centerOn(j, 3); this.redraw(); } });
        return el('li', {}, b, extra);
      }));
      const title = this.kind === 'models'
        ? `Best datasets (where it ranks highest within the dataset's task pool; up to ${this.data.top_k})`
        : `Top ${this.data.top_k} models (the task's pool, metric unknown)`;
      const kids = [...head, el('h3', { class: 'muted', text: title }), top.length ? list : el('p', { class: 'muted', text: 'none: no records on any task of this bundle' })];
      if (this.kind === 'datasets' && this.opts.onRankDataset) {
        kids.push(el('button', { type: 'button', text: 'Rank with filters in the recommender', onclick: () => this.opts.onRankDataset(d.name[i], this.data.tasks[d.task[i]]) }));
      }
      this.info.replaceChildren(...kids);
      this.root.dataset.selected = d.name[i];
    }
  }

  async function load(source, statusEl) {
    if (typeof source !== 'string') return source;
    for (;;) {
      const r = await fetch(source);
      if (r.status === 200) return r.json();
      const body = await r.json().catch(() => ({}));
      if (r.status !== 202) throw new Error(body.detail || `HTTP ${r.status}`);
      statusEl.textContent = body.detail || 'atlas: being computed…';
      await new Promise((ok) => setTimeout(ok, 1500));
    }
  }

  const api = {
    current: null,
    async start(root, source, opts) {
      const status = el('p', { class: 'muted', id: 'atlas-loading', text: 'loading the atlas…' });
      root.replaceChildren(status);
      try {
        const data = await load(source, status);
        api.current = new Atlas(root, data, opts);
        root.dataset.ready = '1';
      } catch (e) {
        status.className = 'error'; status.textContent = `atlas unavailable: ${e.message || e}`;
      }
      return api.current;
    },
  };
  return api;
})();
