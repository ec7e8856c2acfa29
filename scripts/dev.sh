#!/usr/bin/env bash
# The one-command dev environment behind `make up` / `make down` (and `make check-prereqs`).
#
#   scripts/dev.sh check     check prerequisites only; print the fix for each missing one
#   scripts/dev.sh python    check only the Python that creates the virtualenv (what `make test` needs)
#   scripts/dev.sh up        check, then: local registry + kind cluster (if missing), sample catalog,
#                            dev stack (local file backend), `pulumi up --stack dev --yes`
#   scripts/dev.sh cluster   check, then only the registry, kind cluster and sample catalog (no Pulumi)
#   scripts/dev.sh down      `pulumi destroy` the dev stack, delete the kind cluster and the registry
#
# Nothing here touches your global Pulumi login: every pulumi command runs with
# PULUMI_BACKEND_URL=file://<repo>/.pulumi-state unless you set DEV_BACKEND_URL. With that default local
# backend, and only then, PULUMI_CONFIG_PASSPHRASE defaults to a fixed, non-secret value for the dev stack
# (set PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE yourself to use another).
#
# Settings (environment variables, defaults in brackets): STACK [dev], KIND_CLUSTER [lsdb-dev],
# REGISTRY_NAME [kind-registry], REGISTRY_PORT [5001], REGISTRY_IMAGE [registry:2.8.3],
# CATALOG_DIR [<repo>/.build/dev/catalogs], SAMPLE_ROWS [20000], KIND_NODE_IMAGE [kind's default],
# DEV_BACKEND_URL [file://<repo>/.pulumi-state], PULUMI_UP_ARGS [none; e.g. "--policy-pack policy"].
# The kube context (kind-<KIND_CLUSTER>), registry port and node catalog path (/lsdb-catalogs) must match
# Pulumi.dev.yaml (kubeContext, image.repository, storage.hostPath.path).
set -euo pipefail

SELF="${BASH_SOURCE[0]}"
[[ "$SELF" == */* ]] || SELF="./${SELF}"
ROOT="$(cd "${SELF%/*}/.." && pwd)"
STACK="${STACK:-dev}"
KIND_CLUSTER="${KIND_CLUSTER:-lsdb-dev}"
KUBE_CONTEXT="kind-${KIND_CLUSTER}"
REGISTRY_NAME="${REGISTRY_NAME:-kind-registry}"
REGISTRY_PORT="${REGISTRY_PORT:-5001}"
REGISTRY_IMAGE="${REGISTRY_IMAGE:-registry:2.8.3}"
CATALOG_DIR="${CATALOG_DIR:-${ROOT}/.build/dev/catalogs}"
NODE_CATALOG_PATH="/lsdb-catalogs"
SAMPLE_ROWS="${SAMPLE_ROWS:-20000}"
DEFAULT_BACKEND_URL="file://${ROOT}/.pulumi-state"
DEV_BACKEND_URL="${DEV_BACKEND_URL:-${DEFAULT_BACKEND_URL}}"
DEV_PASSPHRASE="lsdb-dev-local-only"
VENV_PYTHON="${ROOT}/.venv/bin/python"
KIND_VERSION="v0.27.0"
MIN_KUBERNETES_MINOR=25

# --- output ---------------------------------------------------------------------------------------

say() { printf '==> %s\n' "$*"; }
ok() { printf '    ok       %s\n' "$*"; }
PROBLEMS=()
problem() {
    PROBLEMS+=("$1")
    printf '    MISSING  %s\n' "$1" >&2
}
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

os_name() { uname -s 2>/dev/null || echo unknown; }
arch() {
    case "$(uname -m 2>/dev/null || true)" in
        aarch64 | arm64) echo arm64 ;;
        *) echo amd64 ;;
    esac
}
have() { command -v "$1" >/dev/null 2>&1; }

# --- install / fix instructions -------------------------------------------------------------------

fix_pulumi() {
    local msg="pulumi not found: install with \`curl -fsSL https://get.pulumi.com | sh\`"
    msg+=" (it goes to ~/.pulumi/bin: open a new shell or run \`export PATH=\"\$HOME/.pulumi/bin:\$PATH\"\`)"
    [[ "$(os_name)" == Darwin ]] && msg+=", or \`brew install pulumi/tap/pulumi\`"
    printf '%s' "$msg"
}

fix_docker() {
    if [[ "$(os_name)" == Darwin ]]; then
        printf '%s' "docker not found: install Docker Desktop with \`brew install --cask docker\` (or from https://docs.docker.com/desktop/) and start it"
    else
        printf '%s' "docker not found: install Docker Engine with \`curl -fsSL https://get.docker.com | sh\` (or see https://docs.docker.com/engine/install/), then \`sudo systemctl start docker\`"
    fi
}

fix_docker_daemon() {
    local why="$1"
    if [[ "$(os_name)" == Darwin ]]; then
        printf '%s' "docker daemon not reachable (${why}): start Docker Desktop (\`open -a Docker\`) and wait until it reports running"
    else
        printf '%s' "docker daemon not reachable (${why}): start it with \`sudo systemctl start docker\`; if it is running, let your user use it with \`sudo usermod -aG docker \$USER\` and log in again"
    fi
}

fix_kubectl() {
    if [[ "$(os_name)" == Darwin ]]; then
        printf '%s' "kubectl not found: install with \`brew install kubectl\`"
    else
        printf '%s' "kubectl not found: install with \`curl -LO \"https://dl.k8s.io/release/\$(curl -Ls https://dl.k8s.io/release/stable.txt)/bin/linux/$(arch)/kubectl\" && sudo install -m 0755 kubectl /usr/local/bin/kubectl\`"
    fi
}

fix_kind() {
    local why="$1" how
    if [[ "$(os_name)" == Darwin ]]; then
        how="\`brew install kind\`"
    else
        how="\`curl -Lo ./kind https://kind.sigs.k8s.io/dl/${KIND_VERSION}/kind-linux-$(arch) && chmod +x ./kind && sudo mv ./kind /usr/local/bin/kind\` (or \`go install sigs.k8s.io/kind@${KIND_VERSION}\`)"
    fi
    printf '%s' "kind not found${why}: install it with ${how}"
}

fix_python() {
    printf '%s' "python3 not found: install Python 3.11 (Debian/Ubuntu: \`sudo apt-get install python3 python3-venv\`; macOS: \`brew install python@3.11\`), or run make with PY=/path/to/python3.11"
}

# --- checks ---------------------------------------------------------------------------------------

# Succeeds silently, or prints the first line of docker's error and fails.
docker_reachable() {
    local err
    if err="$(docker version --format '{{.Server.Version}}' 2>&1 >/dev/null)"; then
        return 0
    fi
    err="${err%%$'\n'*}"
    printf '%s' "${err:-docker version failed}"
    return 1
}

context_reachable() {
    kubectl --context "$KUBE_CONTEXT" --request-timeout=5s get --raw=/readyz >/dev/null 2>&1
}

# The program is written for the Pulumi 3.x CLI.
check_pulumi_version() {
    local version
    version="$(pulumi version 2>/dev/null || true)"
    if [[ "$version" =~ ^v?3\. ]]; then
        ok "pulumi ${version} ($(command -v pulumi))"
    else
        problem "pulumi ${version:-(no version)} is not Pulumi 3.x: install 3.x with \`curl -fsSL https://get.pulumi.com | sh\`"
    fi
}

# Kubernetes v1.${MIN_KUBERNETES_MINOR}+: the cluster's own version when the context answers, else the node
# image kind will use (KIND_NODE_IMAGE, or kind's default, v1.25+ from kind v0.17.0 on).
check_kubernetes_version() {
    local minor="" where version git='"gitVersion":[[:space:]]*"v1[.]([0-9]+)'
    if have kubectl && context_reachable; then
        where="kube context ${KUBE_CONTEXT}"
        version="$(kubectl --context "$KUBE_CONTEXT" --request-timeout=5s get --raw=/version 2>/dev/null || true)"
        [[ "$version" =~ $git ]] && minor="${BASH_REMATCH[1]}"
    elif [[ -n "${KIND_NODE_IMAGE:-}" ]]; then
        where="KIND_NODE_IMAGE ${KIND_NODE_IMAGE}"
        [[ "$KIND_NODE_IMAGE" =~ :v1[.]([0-9]+) ]] && minor="${BASH_REMATCH[1]}"
    elif have kind; then
        version="$(kind version 2>/dev/null || true)"
        if [[ "$version" =~ ^kind\ v0[.]([0-9]+)[.] ]] && ((BASH_REMATCH[1] < 17)); then
            local how
            how="$(fix_kind "")"
            problem "${version%% go*} creates clusters older than Kubernetes v1.${MIN_KUBERNETES_MINOR} by default: ${how#kind not found: }"
        else
            ok "kind creates Kubernetes v1.${MIN_KUBERNETES_MINOR}+ by default (${version%% go*})"
        fi
        return 0
    else
        return 0 # kind and the context are missing: reported above
    fi
    if [[ -z "$minor" ]]; then
        ok "Kubernetes version of ${where} not readable: not checked"
    elif ((minor < MIN_KUBERNETES_MINOR)); then
        problem "${where} is Kubernetes v1.${minor}; the program needs v1.${MIN_KUBERNETES_MINOR} or later: \`make down\`, then \`make up\` with kind's default node image (or KIND_NODE_IMAGE=kindest/node:v1.${MIN_KUBERNETES_MINOR}.0 or later)"
    else
        ok "Kubernetes v1.${minor} (${where})"
    fi
}

# The Python that creates the virtualenv (`make up` and `make test` check it before anything else).
check_python() {
    # The locks are resolved for one Python minor (pyproject.toml's requires-python, the image's pythonVersion):
    # another minor would build the cluster and then fail the client check at `pulumi up`.
    local want_minor have_minor py="${PY:-python3}"
    local line requires='^requires-python = ">=([0-9]+[.][0-9]+),'
    while IFS= read -r line; do
        [[ "$line" =~ $requires ]] && want_minor="${BASH_REMATCH[1]}"
    done <"${ROOT}/pyproject.toml"
    [[ -e "${ROOT}/.venv/.installed" ]] && py="${VENV_PYTHON}"
    if ! have "$py"; then
        problem "$(fix_python)"
    elif ! have_minor="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"; then
        problem "$py does not run: $(fix_python)"
    elif [[ "$have_minor" != "$want_minor" ]]; then
        problem "$py is Python ${have_minor}, but the locks are for Python ${want_minor}: install Python ${want_minor} and run make with PY=/path/to/python${want_minor} (or \`rm -rf .venv\` if the virtualenv was made with another Python)"
    elif [[ ! -e "${ROOT}/.venv/.installed" ]] && ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        problem "$py cannot create virtualenvs (no ensurepip): install it with \`sudo apt-get install python3-venv\`"
    else
        ok "python ${have_minor} ($(command -v "$py")) for the virtualenv"
    fi
}

# One line per prerequisite; exits 2 listing every missing one. $1: up (everything) or cluster (no Pulumi).
check_prereqs() {
    local mode="${1:-up}"
    say "checking prerequisites for \`make up\` (stack ${STACK}, kind cluster ${KIND_CLUSTER}, context ${KUBE_CONTEXT})"
    if [[ "$mode" == up ]]; then
        if have pulumi; then check_pulumi_version; else problem "$(fix_pulumi)"; fi
    fi

    if have docker; then
        local why
        if why="$(docker_reachable)"; then
            ok "docker daemon reachable"
        else
            problem "$(fix_docker_daemon "$why")"
        fi
    else
        problem "$(fix_docker)"
    fi

    if have kubectl; then ok "kubectl ($(command -v kubectl))"; else problem "$(fix_kubectl)"; fi

    if have kind; then
        ok "kind ($(command -v kind))"
    elif have kubectl && context_reachable; then
        ok "kube context ${KUBE_CONTEXT} reachable (kind not installed: using that cluster as it is)"
    elif have kubectl; then
        problem "$(fix_kind " and kube context ${KUBE_CONTEXT} is not reachable") so \`make up\` can create the ${KIND_CLUSTER} cluster"
    else
        problem "$(fix_kind "") so \`make up\` can create the ${KIND_CLUSTER} cluster"
    fi

    check_kubernetes_version

    check_python

    if ((${#PROBLEMS[@]})); then
        printf '\nmake up stopped before changing anything: %d prerequisite(s) missing, see MISSING above.\n' \
            "${#PROBLEMS[@]}" >&2
        printf '%s\n' "Fix them and run \`make up\` again (\`make check-prereqs\` re-checks without deploying)." >&2
        exit 2
    fi
}

# --- Pulumi backend -------------------------------------------------------------------------------

use_dev_backend() {
    export PULUMI_BACKEND_URL="$DEV_BACKEND_URL"
    if [[ "$DEV_BACKEND_URL" == "$DEFAULT_BACKEND_URL" ]]; then
        if [[ -z "${PULUMI_CONFIG_PASSPHRASE:-}" && -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]]; then
            # Local dev stack only: its state never leaves this checkout, and it holds no real secrets.
            export PULUMI_CONFIG_PASSPHRASE="$DEV_PASSPHRASE"
        fi
    fi
}

local_stack_recorded() {
    [[ "$DEV_BACKEND_URL" == "$DEFAULT_BACKEND_URL" ]] || return 0 # a remote backend: assume it may exist
    compgen -G "${ROOT}/.pulumi-state/.pulumi/stacks/*/${STACK}.json*" >/dev/null \
        || compgen -G "${ROOT}/.pulumi-state/.pulumi/stacks/${STACK}.json*" >/dev/null
}

# --- registry, cluster, catalog -------------------------------------------------------------------

kind_cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; }
kind_nodes() { docker ps --filter "label=io.x-k8s.kind.cluster=${KIND_CLUSTER}" --format '{{.Names}}'; }
registry_state() { docker inspect -f '{{.State.Running}}' "$REGISTRY_NAME" 2>/dev/null || echo absent; }

seed_catalog() {
    local target="${CATALOG_DIR}/sample" partial="${CATALOG_DIR}/.sample.partial"
    mkdir -p "$CATALOG_DIR"
    if [[ -d "$target" && -n "$(ls -A "$target")" ]]; then
        ok "sample catalog present in ${target}"
        return
    fi
    [[ -f "${ROOT}/scripts/sample_catalog.py" ]] || die "scripts/sample_catalog.py is missing: cannot seed ${target}"
    say "writing a ${SAMPLE_ROWS}-row sample HATS catalog to ${target}"
    rm -rf "$partial"
    "$VENV_PYTHON" "${ROOT}/scripts/sample_catalog.py" "$partial" --rows "$SAMPLE_ROWS"
    rm -rf "$target"
    mv "$partial" "$target"
}

ensure_registry() {
    case "$(registry_state)" in
        true) ok "registry ${REGISTRY_NAME} running on 127.0.0.1:${REGISTRY_PORT}" ;;
        false)
            say "starting the stopped registry container ${REGISTRY_NAME}"
            docker start "$REGISTRY_NAME" >/dev/null
            ;;
        *)
            say "creating the local registry ${REGISTRY_NAME} (${REGISTRY_IMAGE}) on 127.0.0.1:${REGISTRY_PORT}"
            docker run -d --restart=always -p "127.0.0.1:${REGISTRY_PORT}:5000" --network bridge \
                --name "$REGISTRY_NAME" "$REGISTRY_IMAGE" >/dev/null \
                || die "could not start ${REGISTRY_NAME} on 127.0.0.1:${REGISTRY_PORT}; if the port is taken, free it (the dev stack pushes to localhost:${REGISTRY_PORT})"
            ;;
    esac
}

render_kind_config() {
    local line
    while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line//__CATALOG_DIR__/${CATALOG_DIR}}"
        printf '%s\n' "${line//__POD_SECURITY_DIR__/${ROOT}/scripts}"
    done <"${ROOT}/scripts/kind-config.yaml"
}

ensure_cluster() {
    if ! have kind; then
        ok "kind not installed: using the reachable context ${KUBE_CONTEXT} as it is"
        return
    fi
    if kind_cluster_exists; then
        ok "kind cluster ${KIND_CLUSTER} exists"
        return
    fi
    say "creating kind cluster ${KIND_CLUSTER} (catalog folder ${CATALOG_DIR} -> node ${NODE_CATALOG_PATH})"
    local image_args=()
    [[ -n "${KIND_NODE_IMAGE:-}" ]] && image_args=(--image "$KIND_NODE_IMAGE")
    # ${a[@]+"${a[@]}"}: an empty array under `set -u` on macOS's bash 3.2.
    render_kind_config | kind create cluster --name "$KIND_CLUSTER" --config=- --wait 120s ${image_args[@]+"${image_args[@]}"}
}

wire_registry() {
    local nodes node dir="/etc/containerd/certs.d/localhost:${REGISTRY_PORT}"
    nodes="$(kind_nodes)"
    if [[ -z "$nodes" ]]; then
        printf 'warning: %s has no kind nodes on this Docker host: make sure it can pull localhost:%s images and has %s/sample on its nodes\n' \
            "$KUBE_CONTEXT" "$REGISTRY_PORT" "$NODE_CATALOG_PATH" >&2
        return
    fi
    for node in $nodes; do
        docker exec "$node" mkdir -p "$dir"
        printf '[host."http://%s:5000"]\n' "$REGISTRY_NAME" | docker exec -i "$node" cp /dev/stdin "${dir}/hosts.toml"
        if ! docker exec "$node" test -d "${NODE_CATALOG_PATH}/sample"; then
            die "kind node ${node} has no ${NODE_CATALOG_PATH}/sample: the ${KIND_CLUSTER} cluster was created without the catalog mount of scripts/kind-config.yaml (or with another CATALOG_DIR); run \`make down\` and \`make up\` again"
        fi
    done
    if [[ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REGISTRY_NAME")" == null ]]; then
        docker network connect kind "$REGISTRY_NAME"
    fi
    # KEP-1755: tells tools in the cluster where the local registry is.
    kubectl --context "$KUBE_CONTEXT" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
data:
  localRegistryHosting.v1: |
    host: "localhost:${REGISTRY_PORT}"
    help: "https://kind.sigs.k8s.io/docs/user/local-registry/"
EOF
    ok "registry localhost:${REGISTRY_PORT} wired into ${KIND_CLUSTER}; catalog at ${NODE_CATALOG_PATH}/sample"
}

ensure_venv() {
    [[ -e "${ROOT}/.venv/.installed" ]] || "${MAKE:-make}" -C "$ROOT" --no-print-directory venv
}

cmd_cluster() {
    ensure_venv
    seed_catalog
    ensure_registry
    ensure_cluster
    wire_registry
}

cmd_up() {
    [[ "${DEV_PREREQS_CHECKED:-}" == 1 ]] || check_prereqs
    cmd_cluster
    use_dev_backend
    [[ "$DEV_BACKEND_URL" == "$DEFAULT_BACKEND_URL" ]] && mkdir -p "${ROOT}/.pulumi-state"
    cd "$ROOT"
    say "Pulumi backend ${PULUMI_BACKEND_URL} (your global \`pulumi login\` is not used)"
    pulumi stack select --stack "$STACK" --create --non-interactive
    local extra=()
    read -r -a extra <<<"${PULUMI_UP_ARGS:-}"
    # --refresh: a DaskCluster the operator deleted itself (cluster.idleTimeoutSeconds) is seen gone and recreated.
    say "pulumi up --stack ${STACK} --refresh --yes ${PULUMI_UP_ARGS:-}"
    pulumi up --stack "$STACK" --refresh --yes ${extra[@]+"${extra[@]}"}
    say "dev environment ready. Reach the scheduler and dashboard from here with:"
    printf '    %s\n' "$(pulumi stack output --stack "$STACK" portForwardScheduler)" \
        "$(pulumi stack output --stack "$STACK" portForwardDashboard)"
    printf '    then Client("%s") and %s ; %s removes everything.\n' \
        "$(pulumi stack output --stack "$STACK" localSchedulerAddress)" \
        "$(pulumi stack output --stack "$STACK" localDashboardUrl)" "\`make down\`"
}

cmd_down() {
    use_dev_backend
    say "checking what \`make down\` has to remove (stack ${STACK} in ${PULUMI_BACKEND_URL}, kind cluster ${KIND_CLUSTER}, registry ${REGISTRY_NAME})"
    local destroy_stack=0 delete_cluster=0 delete_registry=0
    if local_stack_recorded; then
        if have pulumi; then destroy_stack=1; else problem "$(fix_pulumi) (needed to destroy the ${STACK} stack)"; fi
    else
        ok "no ${STACK} stack recorded in ${PULUMI_BACKEND_URL}"
    fi
    if have docker; then
        local why
        if why="$(docker_reachable)"; then
            [[ -n "$(kind_nodes)" ]] && delete_cluster=1
            [[ "$(registry_state)" != absent ]] && delete_registry=1
            if ((delete_cluster)) && ! have kind; then
                problem "$(fix_kind "") (needed to delete the ${KIND_CLUSTER} cluster)"
            fi
        else
            problem "$(fix_docker_daemon "$why") (needed to remove the ${KIND_CLUSTER} kind cluster and the ${REGISTRY_NAME} registry)"
        fi
    else
        ok "docker not installed: no kind cluster or registry to remove"
    fi
    if ((${#PROBLEMS[@]})); then
        printf '\nmake down stopped before changing anything: %d prerequisite(s) missing, see MISSING above.\n' \
            "${#PROBLEMS[@]}" >&2
        exit 2
    fi

    cd "$ROOT"
    if ((destroy_stack)); then
        if pulumi stack select --stack "$STACK" --non-interactive >/dev/null 2>&1; then
            ensure_venv
            say "pulumi destroy --stack ${STACK} --yes"
            # Resources of a cluster that is already gone are dropped from the state instead of failing.
            PULUMI_K8S_DELETE_UNREACHABLE=true pulumi destroy --stack "$STACK" --yes
        else
            ok "no ${STACK} stack in ${PULUMI_BACKEND_URL}"
        fi
    fi
    if ((delete_cluster)); then
        say "kind delete cluster --name ${KIND_CLUSTER}"
        kind delete cluster --name "$KIND_CLUSTER"
    else
        ok "no kind cluster ${KIND_CLUSTER}"
    fi
    if ((delete_registry)); then
        say "removing registry container ${REGISTRY_NAME}"
        docker rm -f "$REGISTRY_NAME" >/dev/null
    else
        ok "no registry container ${REGISTRY_NAME}"
    fi
    say "dev environment removed (the sample catalog stays in ${CATALOG_DIR}; delete it with \`rm -rf ${CATALOG_DIR}\`)"
}

usage() {
    local line n=0
    while IFS= read -r line && ((n++ < 8)); do
        line="${line#\#}"
        ((n > 1)) && printf '%s\n' "${line# }"
    done <"$SELF"
}

main() {
    case "${1:-}" in
        check)
            check_prereqs
            say "all prerequisites found"
            ;;
        python)
            check_python
            if ((${#PROBLEMS[@]})); then
                printf '\nstopped before creating the virtualenv: see MISSING above.\n' >&2
                exit 2
            fi
            ;;
        up) cmd_up ;;
        cluster)
            [[ "${DEV_PREREQS_CHECKED:-}" == 1 ]] || check_prereqs cluster
            cmd_cluster
            ;;
        down) cmd_down ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 64
            ;;
    esac
}

# Sourcing the file (the tests do) defines the functions without running anything.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
