"""The fixed-shape ranking batch: the one contract between the input pipeline, the scorer and
the losses.

A batch holds ``R`` rows of ``L`` list slots. Each slot is one record (a model evaluated on an
evaluation group). Rows are either one group padded to ``L`` or several short groups packed
into one row, told apart by ``segment`` (1, 2, ... inside a row; 0 = padding). Features are not
repeated per record: the ``U`` distinct models and ``S`` distinct groups of the batch are listed
once, and each slot points at them through ``model_slot`` / ``group_slot``. This lets the scorer
apply the model-side half of its first layer once per distinct model.

Keys (all numpy/jax arrays; shapes fixed by the config so the step never recompiles):

records, ``[R, L]``
  ``mask``        bool     real record (False = padding)
  ``segment``     int32    group number inside the row, 1-based; 0 for padding
  ``model_slot``  int32    row of the models block
  ``group_slot``  int32    row of the groups block
  ``value``       float32  oriented value (higher = better), for ranking order and metrics
  ``z``           float32  within-group z-score of ``value`` (pointwise target)
  ``competence``  float32  ``[R, L, F]`` the record's competence features (``data.competence``;
                           NaN = unknown), when the scorer uses them
  ``competence_cold``  float32  the same as if the model were new (cold-start episodes)
models, ``[U, ...]`` (``data.features.MODEL_INPUTS``)
  ``model_id``     int32    learned-ID row (0 = [UNK]: unseen in training)
  ``name_tokens``  int32    ``[U, T]`` hashed name-token buckets
  ``name_mask``    bool     ``[U, T]``
  ``model_desc``   float32  ``[U, Dm]`` frozen description embedding
  ``size_bucket``  int32    0 = unknown size
  ``log_size``     float32  log10(parameters in billions); 0 when the size is unknown
  ``release``      float32  release date in years since 2000; 0 when unknown
  ``family``       int32    0 = [UNK] family
groups, ``[S, ...]`` (``data.features.CONTEXT_INPUTS``)
  ``dataset_id``    int32    learned-ID row (0 = [UNK])
  ``dataset_desc``  float32  ``[S, Dd]``
  ``task``          int32
  ``metric``        int32
optional, ``[R, B]``
  ``blocks``      int8     zeros; present when the batch is ``B`` shard-local blocks: rows,
                           models and groups each split into ``B`` equal consecutive parts, and a
                           row's slots point only into its own block's models and groups (one
                           block per data shard, so the scorer's gathers stay on the shard)
"""

from __future__ import annotations

from modellens_jax.data import features

RECORD_KEYS = ("mask", "segment", "model_slot", "group_slot", "value", "z")
COMPETENCE_KEYS = ("competence", "competence_cold")  # optional record keys [R, L, F]
MODEL_KEYS = features.MODEL_KEYS  # the models block (``features.MODEL_INPUTS``)
GROUP_KEYS = features.CONTEXT_KEYS  # the groups block (``features.CONTEXT_INPUTS``)
