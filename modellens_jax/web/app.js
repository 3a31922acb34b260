// The recommendation page: query form -> POST /recommend -> ranked pool; router downloads.
(function () {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const COMPONENTS = ['prior', 'cold', 'residual'];
  // Optional per-result fields shown only when the bundle's recommendations carry them.
  const OPTIONAL = [['confidence', 'confidence'], ['score_std', 'score ± (spread)']];
  let vocab = null;
  let csv = null; // {name, text} of an uploaded candidate file
  let atlasStarted = false;

  function fill(listId, names) {
    const dl = $(listId);
    dl.replaceChildren(...names.map((n) => { const o = document.createElement('option'); o.value = n; return o; }));
  }

  function query(format) {
    const num = (id) => { const v = $(id).value.trim(); return v === '' ? null : Number(v); };
    const str = (id) => { const v = $(id).value.trim(); return v === '' ? null : v; };
    const q = {
      dataset_desc: str('dataset_desc'), task: str('task'), metric: str('metric'),
      dataset: str('dataset'), pool: $('pool').value, top_k: num('top_k') ?? 10,
      min_params: num('min_params'), max_params: num('max_params'),
      families: str('families'), new_task: $('new_task').checked, format: format || 'json',
    };
    if (csv) q.candidates_csv = csv.text;
    return q;
  }

  async function post(path, body) {
    const r = await fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    const text = await r.text();
    let data = null;
    try { data = JSON.parse(text); } catch (e) { data = null; }
    return { ok: r.ok, status: r.status, text, data };
  }

  function showError(res) {
    document.querySelectorAll('.invalid').forEach((el) => el.classList.remove('invalid'));
    if (!res) { $('error').textContent = ''; return; }
    const d = res.data || {};
    $('error').textContent = `${res.status}: ${d.detail || res.text}`;
    const el = d.field && $(d.field === 'candidates_csv' ? 'candidates_file' : d.field);
    if (el) el.classList.add('invalid');
  }

  function fmt(x, digits = 4) { return x === null || x === undefined ? '' : Number(x).toFixed(digits); }

  function bar(r, scale, parts) {
    const div = document.createElement('div');
    div.className = 'bar';
    div.title = parts.map((c) => `${c} ${fmt(r[c])}`).join('  ');
    for (const c of parts) {
      const s = document.createElement('span');
      s.className = c + (r[c] < 0 ? ' neg' : '');
      s.style.width = `${(100 * Math.abs(r[c] || 0)) / scale}%`;
      div.appendChild(s);
    }
    return div;
  }

  function render(doc) {
    const rows = doc.results || [];
    // the score's parts this bundle reports (prior + cold + residual today)
    const parts = COMPONENTS.filter((c) => rows.some((r) => r[c] !== undefined));
    document.querySelectorAll('.legend-line [data-part]').forEach((el) => { el.hidden = !parts.includes(el.dataset.part); });
    const optional = OPTIONAL.filter(([k]) => rows.some((r) => r[k] !== undefined && r[k] !== null));
    const head = ['rank', 'model', 'score', ...optional.map(([, label]) => label), ...parts, 'parts', 'params', 'family', 'unknown'];
    const tr = document.createElement('tr');
    for (const h of head) { const th = document.createElement('th'); th.textContent = h; th.scope = 'col'; tr.appendChild(th); }
    $('results').tHead.replaceChildren(tr);
    const scale = Math.max(1e-9, ...rows.map((r) => parts.reduce((a, c) => a + Math.abs(r[c] || 0), 0)));
    const body = $('results').tBodies[0];
    body.replaceChildren(...rows.map((r) => {
      const row = document.createElement('tr');
      const cell = (text, cls) => { const td = document.createElement('td'); td.textContent = text; if (cls) td.className = cls; row.appendChild(td); return td; };
      cell(String(r.rank), 'num');
      const m = cell(r.model, 'model');
      if (r.description) m.title = r.description;
      cell(fmt(r.score), 'num score');
      for (const [k] of optional) cell(fmt(r[k], 3), 'num');
      for (const c of parts) cell(fmt(r[c]), `num ${c}-v`);
      const td = document.createElement('td'); td.appendChild(bar(r, scale, parts)); row.appendChild(td);
      cell(r.params === null || r.params === undefined ? '?' : `${Number(r.params).toPrecision(3).replace(/\.?0+$/, '')}B`, 'num');
      cell(r.family || '');
      const u = cell('');
      for (const x of r.unknown || []) { const t = document.createElement('span'); t.className = 'tag'; t.textContent = x; u.appendChild(t); }
      if (!r.known) { const t = document.createElement('span'); t.className = 'tag'; t.textContent = 'new model'; u.appendChild(t); }
      return row;
    }));
    $('pool-reason').textContent = rows.length
      ? `pool: ${rows[0].pool}; ${rows.length} shown`
      : 'no model passes the filters';
    $('results-wrap').hidden = false;
  }

  async function rank(ev) {
    if (ev) ev.preventDefault();
    $('rank').disabled = true;
    try {
      const res = await post('recommend', query('json'));
      if (!res.ok) { showError(res); return; }
      showError(null);
      render(res.data);
    } catch (e) {
      $('error').textContent = `the service did not answer (${e})`;
    } finally {
      $('rank').disabled = false;
    }
  }

  async function download(format) {
    const res = await post('recommend', query(format));
    if (!res.ok) { showError(res); return; }
    showError(null);
    const names = { routellm: 'routellm_config.json', llmrouter: 'llm_candidates.json', json: 'recommendations.json' };
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([res.text + '\n'], { type: 'application/json' }));
    a.download = names[format];
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  function route() {
    const atlas = location.hash === '#atlas';
    $('recommend').hidden = atlas;
    $('atlas').hidden = !atlas;
    $('nav-recommend').toggleAttribute('aria-current', !atlas);
    $('nav-atlas').toggleAttribute('aria-current', atlas);
    if (atlas) {
      $('nav-atlas').setAttribute('aria-current', 'page');
      if (!atlasStarted) {
        atlasStarted = true;
        ModelLensAtlas.start($('atlas'), 'atlas', { onRankDataset: rankDataset });
      } else if (ModelLensAtlas.current) {
        ModelLensAtlas.current.redraw();
      }
    } else {
      $('nav-recommend').setAttribute('aria-current', 'page');
    }
  }

  function rankDataset(name, task) {
    $('dataset').value = name;
    $('task').value = task || '';
    location.hash = '#recommend';
    rank();
  }

  async function init() {
    $('query').addEventListener('submit', rank);
    document.querySelectorAll('button.dl').forEach((b) => b.addEventListener('click', () => download(b.dataset.format)));
    $('candidates_file').addEventListener('change', async () => {
      const f = $('candidates_file').files[0];
      if (!f) return;
      csv = { name: f.name, text: await f.text() };
      $('candidates_info').textContent = `ranking ${f.name} (${f.size.toLocaleString()} bytes) instead of the pool`;
      $('candidates_clear').hidden = false;
    });
    $('candidates_clear').addEventListener('click', () => {
      csv = null; $('candidates_file').value = ''; $('candidates_info').textContent = ''; $('candidates_clear').hidden = true;
    });
    $('dataset').addEventListener('change', () => {
      if (!vocab) return;
      const i = vocab.datasets.indexOf($('dataset').value.trim());
      if (i >= 0 && !$('task').value.trim() && vocab.dataset_tasks[i]) $('task').value = vocab.dataset_tasks[i];
    });
    window.addEventListener('hashchange', route);
    route();
    try {
      const [v, h] = await Promise.all([fetch('vocab').then((r) => r.json()), fetch('healthz').then((r) => r.json())]);
      vocab = v;
      fill('tasks-list', v.tasks); fill('metrics-list', v.metrics); fill('datasets-list', v.datasets); fill('families-list', v.families);
      $('bundle-info').textContent = `bundle step ${h.step} · ${h.models.toLocaleString()} models · ${h.datasets.toLocaleString()} datasets · ${v.tasks.length} tasks`;
      document.body.dataset.ready = '1';
    } catch (e) {
      $('error').textContent = `could not read the vocabulary (${e})`;
    }
  }

  window.ModelLensPage = { render }; // for tests: render a /recommend document
  init();
})();
