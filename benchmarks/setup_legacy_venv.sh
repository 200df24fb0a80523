#!/usr/bin/env bash
# Build the separate venv used only to benchmark the old langchain-community
# SageMakerCallbackHandler (benchmarks/overhead.py, variant "sagemaker-legacy").
#
# Why a separate venv: the handler needs SageMaker SDK v2 (`sagemaker<3`, for
# `sagemaker.experiments.run.Run`). `pip install --dry-run "sagemaker<3"` in the
# main venv would downgrade sagemaker-core 2.27 -> 1.0.x (asynctrack's `sagemaker`
# extra needs sagemaker-core>=2.27) and attrs/packaging/graphql-core, so it must not
# go into /work/main/.venv.
#
# The benchmark finds this venv at benchmarks/.venv-legacy (gitignored), or at
# $ASYNCTRACK_BENCH_LEGACY_VENV. Without it, the variant is skipped with a note.
#
# Usage: bash benchmarks/setup_legacy_venv.sh [python]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${ASYNCTRACK_BENCH_LEGACY_VENV:-$here/.venv-legacy}"
python="${1:-$(dirname "$(readlink -f "$here/../.venv/bin/python")")/python3}"
# Same langchain-core as the main venv, so both processes run the same LangChain.
lc_version="$("$here/../.venv/bin/python" -c 'import langchain_core; print(langchain_core.__version__)')"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet \
    "langchain-core==$lc_version" "langchain-community" "sagemaker<3" "orjson" "boto3"
"$venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(langchain-core|langchain-community|sagemaker|sagemaker-core|boto3|botocore) '
