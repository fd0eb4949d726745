#!/usr/bin/env bash
# Obtains kube-apiserver, kube-scheduler and etcd for the end-to-end tests, once per machine.
#
# Binaries named by KUBE_APISERVER, KUBE_SCHEDULER and ETCD win when all three are set.
# Otherwise they are built from Debian's `kubernetes` source package (1.20.2, with its vendor/
# tree) with Debian's Go, as shared/research/k8s-e2e-recipe.md describes, and cached under
# ${FLEETSCHED_CACHE:-$HOME/.cache/fleetsched}/kube-1.20.2/bin: about 5 minutes the first time
# on 2 cores, nothing after. Prints the folder holding the three binaries on its last line.
set -euo pipefail

if [[ -n "${KUBE_APISERVER:-}" && -n "${KUBE_SCHEDULER:-}" && -n "${ETCD:-}" ]]; then
  dir="$(mktemp -d)"
  ln -sf "$KUBE_APISERVER" "$dir/kube-apiserver"
  ln -sf "$KUBE_SCHEDULER" "$dir/kube-scheduler"
  ln -sf "$ETCD" "$dir/etcd"
  echo "$dir"
  exit 0
fi

cache="${FLEETSCHED_CACHE:-$HOME/.cache/fleetsched}/kube-1.20.2"
bin="$cache/bin"
if [[ -x "$bin/kube-apiserver" && -x "$bin/kube-scheduler" && -x "$bin/etcd" ]]; then
  echo "$bin"
  exit 0
fi

log() { echo "get-kube: $*" >&2; }
need_root() { [[ "$(id -u)" == 0 ]] || { log "building needs root for apt-get (or set KUBE_APISERVER, KUBE_SCHEDULER, ETCD)"; exit 1; }; }

need_root
if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null; then
  log "adding Debian bookworm deb-src"
  cat > /etc/apt/sources.list.d/fleetsched-src.sources <<'SOURCES'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
fi
log "installing Go, etcd and build tools from Debian"
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go rsync jq etcd-server openssl \
  golang-github-modern-go-reflect2-dev dpkg-dev >&2

work="$cache/src"
rm -rf "$work" && mkdir -p "$work" && cd "$work"
log "fetching the kubernetes source package"
apt-get source --download-only kubernetes >&2
tar xf kubernetes_*.orig.tar.* >&2
src="$(find . -maxdepth 1 -type d -name 'kubernetes-*' | head -n 1)"
cd "$src"
# Go 1.19 builds of 1.20's vendored reflect2 crash kube-apiserver in json-iterator map
# encoding; Debian's reflect2 1.0.2 does not.
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
log "building kube-apiserver and kube-scheduler (about 5 minutes on 2 cores)"
GOPATH="$PWD/.go" CGO_ENABLED=0 make WHAT="cmd/kube-scheduler cmd/kube-apiserver" >&2
mkdir -p "$bin.partial"
cp _output/bin/kube-apiserver _output/bin/kube-scheduler "$bin.partial/"
cp "$(command -v etcd)" "$bin.partial/etcd"
rm -rf "$bin" && mv "$bin.partial" "$bin"
cd "$cache" && rm -rf "$work"
echo "$bin"
