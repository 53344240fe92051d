#!/usr/bin/env bash
# Creates .venv-localstack with LocalStack (requirements/localstack.txt): the S3 server the direct-upload tests use
# because it checks presigned URLs and POST policies. LocalStack needs Python 3.13 or newer, in a venv of its own;
# without one this says so and exits 0 (those tests are then skipped, saying why). Does nothing when
# requirements/localstack.txt is unchanged since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "get-localstack: $*" >&2; }
venv=.venv-localstack
stamp=$venv/.localstack-installed
want=$(sha256sum requirements/localstack.txt | cut -c1-16)
if [ -x $venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
PY=""
for candidate in "${LOCALSTACK_PYTHON:-}" python3.14 python3.13 /root/.pyenv/versions/3.1[3-9]*/bin/python; do
  [ -n "$candidate" ] || continue
  if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 13))' 2>/dev/null; then
    PY=$candidate
    break
  fi
done
if [ -z "$PY" ]; then
  say "no Python 3.13+ found (set LOCALSTACK_PYTHON); the direct-upload tests will be skipped"
  exit 0
fi
started=$SECONDS
if [ ! -x $venv/bin/python ]; then
  say "creating $venv with $("$PY" --version)"
  "$PY" -m venv $venv
fi
say "installing LocalStack's S3 (requirements/localstack.txt): a minute or two the first time"
$venv/bin/python -m pip install -q --upgrade pip
$venv/bin/python -m pip install -q -r requirements/localstack.txt
echo "$want" > "$stamp"
say "installed in $((SECONDS - started)) s"
