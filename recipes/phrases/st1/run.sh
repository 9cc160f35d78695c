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
# The ST encoder from the ASR model (the MTLA paper's set-up), after ../asr1/run.sh --attention mtla:
#   ./run.sh --stage 7 --attention mtla --init_param ../asr1/exp/tiny_mtla_s2_cross:encoder:encoder
# The MTLA authors' ST training (prefix arrangement, their optimiser, dropout, best-10 by dev
# accuracy; conf/authors_prefix.yaml), after ../asr1/run.sh --attention mtla --use_lm false:
#   ./run.sh --stage 7 --attention mtla --config conf/authors_prefix.yaml \
#       --init_param ../asr1/exp/tiny_mtla_s2_cross:encoder:encoder --tag authors
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${here}/../../recipe.sh" "${here}" "$@"
