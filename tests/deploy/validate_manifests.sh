#!/usr/bin/env bash
# Renders deploy/overlays/{cpu,gpu} with kubectl kustomize and checks every object (validate_manifests.mjs),
# the alert rules and the prometheus-adapter queries (promtool), and the container configs (protoc).
#
#   tests/deploy/validate_manifests.sh [WORK_DIR]        (ctest: deploy_manifests)
#
# kubectl: the one on PATH, plus Debian 12's kubectl 1.20 (kustomize v2.0.3) when the PATH one is newer: it is
# fetched once with `apt-get download kubernetes-client` and unpacked into WORK_DIR, never installed. Both
# must render the same objects. Where that download fails (no network, no apt lists) the test says so and goes
# on with the one kubectl. Set CLIPSERVE_EXTRA_KUBECTL to more kubectl binaries (colon-separated) to compare.
# npm packages: installed into tests/deploy/node_modules with `npm ci` when missing or older than the lock.
# Exit 77 (skip) when kubectl or node is missing; tools/install-deps.sh installs both.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=${1:-$repo/build/deploy-test}
mkdir -p "$work"
cd "$repo"

for tool in kubectl node npm promtool protoc; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "validate_manifests: SKIP: $tool not found (bash tools/install-deps.sh installs it)"
    exit 77
  fi
done

# ---- npm packages (exact versions from package-lock.json) ----
if [[ ! -d tests/deploy/node_modules ]] || [[ tests/deploy/package-lock.json -nt tests/deploy/node_modules ]]; then
  npm ci --prefix tests/deploy --no-audit --no-fund
  touch tests/deploy/node_modules
fi

# ---- the kubectl versions to render with ----
kubectls=("$(command -v kubectl)")
version_of() { "$1" version --client 2>/dev/null | grep -o 'v1\.[0-9]*' | head -n1; }
if [[ "$(version_of "${kubectls[0]}")" != "v1.20" ]]; then
  old="$work/kubernetes-client/usr/bin/kubectl"
  if [[ ! -x "$old" ]]; then
    rm -rf "$work/kubernetes-client" "$work/deb" && mkdir -p "$work/deb"
    if (cd "$work/deb" && apt-get download kubernetes-client >/dev/null 2>&1) &&
       dpkg-deb -x "$work"/deb/kubernetes-client_*.deb "$work/kubernetes-client"; then
      echo "validate_manifests: unpacked Debian's kubernetes-client into $work/kubernetes-client"
    else
      echo "validate_manifests: NOTE: could not fetch Debian's kubernetes-client (kubectl 1.20); rendering with one kubectl only"
    fi
    rm -rf "$work/deb"
  fi
  [[ -x "$old" ]] && kubectls+=("$old")
fi
if [[ -n "${CLIPSERVE_EXTRA_KUBECTL:-}" ]]; then
  IFS=: read -r -a extra <<<"$CLIPSERVE_EXTRA_KUBECTL"
  kubectls+=("${extra[@]}")
fi

# ---- render both overlays with each ----
declare -A renders=()
for k in "${kubectls[@]}"; do
  v=$(version_of "$k")
  echo "validate_manifests: kubectl $v ($k)"
  mkdir -p "$work/render-$v"
  for overlay in cpu gpu; do
    out="$work/render-$v/$overlay.yaml"
    # kustomize v3+ warns on stderr about the v2.0.3-compatible fields (bases, patchesStrategicMerge).
    if ! "$k" kustomize "deploy/overlays/$overlay" >"$out" 2>"$out.stderr"; then
      echo "not ok - kubectl $v kustomize deploy/overlays/$overlay"
      cat "$out.stderr"
      exit 1
    fi
    grep -v -e "^# Warning: '\(bases\|patchesStrategicMerge\)' is deprecated" "$out.stderr" || true
    renders[$overlay]+="$out,"
  done
done

# ---- the objects ----
status=0
node tests/deploy/validate_manifests.mjs "--repo=$repo" "--work=$work" "cpu=${renders[cpu]}" "gpu=${renders[gpu]}" ||
  status=1

# ---- the rules: syntax, then behaviour on test series ----
run() {
  local name=$1
  shift
  if out=$("$@" 2>&1); then
    echo "ok - $name"
  else
    echo "not ok - $name"
    echo "$out"
    status=1
  fi
}
run "promtool check rules: the PrometheusRule's alerts" promtool check rules "$work/alerts.rules.json"
run "promtool check rules: the prometheus-adapter queries" promtool check rules "$work/adapter.rules.json"
cp tests/deploy/alerts_test.yaml "$work/alerts_test.yaml"
run "promtool test rules: alerts and adapter queries on test series" promtool test rules "$work/alerts_test.yaml"

# ---- the container configs parse as clipserve.v1.config.ServerConfig (field names and types) ----
encode() { protoc --encode=clipserve.v1.config.ServerConfig -Iproto proto/clipserve/v1/config.proto <"$1" >/dev/null; }
for config in deploy/base/clipserve.textproto deploy/overlays/gpu/clipserve.textproto; do
  run "protoc: $config is a valid ServerConfig" encode "$config"
done

if ((status)); then
  echo "validate_manifests: FAILED"
else
  echo "validate_manifests: passed"
fi
exit "$status"
