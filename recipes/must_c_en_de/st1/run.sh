#!/usr/bin/env bash
# Stage-numbered recipe (ESPnet-style); the stages are implemented in s2s.recipe.stages.
#   ./run.sh [--stage N] [--stop_stage M] [--ngpu G] [--nj J] [--attention NAME]
#            [--stride S] [--arrangement cross|prefix|prompt] [--model_config F] [--train_config F]
#            [--decode_config F] [--tag T] [--init_param SRC:SRC_KEY:DST_KEY[:EXCLUDE]]
#            [--use_lm true|false] [--lm_config F] [--skip_bad_audio true|false]
#            [--config F] [key=value ...]
# Stages: 0 download, 1 data prep, 2 speed perturbation, 3 features, 4 filtering,
#         5 tokenizer, 6 CMVN stats, 7 train (the LM first, when the recipe has one),
#         8 average, 9 decode, 10 score -> RESULTS.md
# The ST encoder from the English ASR model of ../asr1 (the paper's and ESPnet's set-up; MTLA in
# the prefix arrangement needs it: from scratch the frames' merge weights collapse, docs/paper.md):
#   ./run.sh --stage 7 --init_param ../asr1/exp/paper_mtla_s2_prefix:encoder:encoder
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${here}/../../recipe.sh" "${here}" "$@"
