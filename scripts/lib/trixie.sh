# The Debian trixie root that cross-compiles pi-mqtt for the Raspberry Pi
# (sourced by scripts/package and scripts/test.d/60-arm; needs root).
#
# rustup cannot fetch another target's standard library here (only package
# registries are reachable), but Debian ships its Rust standard library as a
# package per architecture: in a trixie root (debootstrap), trixie's rustc
# 1.85 with libstd-rust-dev:arm64 and :armhf (multiarch), the gcc cross
# compilers and libssl-dev of each architecture build aarch64 and armv7
# binaries, Paho C included. The same root is the qemu-user sysroot that
# runs them (its /usr/lib/aarch64-linux-gnu, /usr/lib/arm-linux-gnueabihf).
#
# The root is cached: $PIMQTT_TRIXIE_ROOT, default
# ~/.cache/pi-mqtt/trixie-root (about 1.3 GB), with its cargo registry and
# target directory inside. A stamp file records the package list it was made
# with; a changed list (or a missing stamp) makes it again from nothing.

TRIXIE_ROOT="${PIMQTT_TRIXIE_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/pi-mqtt/trixie-root}"
# Rust targets and their Debian architecture, cross gcc and qemu-user binary.
declare -A TRIXIE_DEB_ARCH=([aarch64-unknown-linux-gnu]=arm64 [armv7-unknown-linux-gnueabihf]=armhf)
declare -A TRIXIE_GCC=([aarch64-unknown-linux-gnu]=aarch64-linux-gnu-gcc [armv7-unknown-linux-gnueabihf]=arm-linux-gnueabihf-gcc)
declare -A TRIXIE_QEMU=([aarch64-unknown-linux-gnu]=qemu-aarch64 [armv7-unknown-linux-gnueabihf]=qemu-arm)
TRIXIE_PACKAGES=(
  rustc cargo libstd-rust-dev:arm64 libstd-rust-dev:armhf
  gcc gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf
  libc6-dev:arm64 libc6-dev:armhf libssl-dev:arm64 libssl-dev:armhf
  cmake make pkgconf dpkg-dev ca-certificates
)
TRIXIE_STAMP="$TRIXIE_ROOT/.pi-mqtt-root"

# The Debian mirror: $PIMQTT_DEBIAN_MIRROR, else the URI of this machine's
# Debian entry in its apt sources (deb822 or one-line). No host is built in:
# with neither, it says so and fails (a machine that installs Debian packages
# has one; a mirror of our choosing might not be reachable from it).
trixie_mirror() {
  if [[ -n "${PIMQTT_DEBIAN_MIRROR:-}" ]]; then echo "$PIMQTT_DEBIAN_MIRROR"; return; fi
  local uri
  uri="$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  [[ -n "$uri" ]] || uri="$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:.*\/debian\/?$/) { print $i; exit } }' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n 1 || true)"
  if [[ -z "$uri" ]]; then
    echo "${prog:-trixie}: no Debian mirror in this machine's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/): set PIMQTT_DEBIAN_MIRROR to the URI of one (ending in /debian)" >&2
    return 1
  fi
  echo "$uri"
}

trixie_need_root() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "${prog:-trixie}: the trixie build root needs root (debootstrap, chroot): run as root or with sudo" >&2
    return 1
  fi
}

# Runs COMMAND... in the root, in a mount namespace of its own (its mounts
# vanish with it, whatever happens): /proc, /dev, and $TRIXIE_SRC (the
# checkout) at /src when set. Network and DNS are the host's.
trixie_run() {
  cp -L /etc/resolv.conf "$TRIXIE_ROOT/etc/resolv.conf" 2>/dev/null || true
  # The root trusts what this machine trusts (a proxy's CA, say) for cargo's
  # downloads: the host's CA bundle, as /etc/ssl/host-ca.crt.
  local ca="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
  if [[ -f "$ca" ]]; then cp -L "$ca" "$TRIXIE_ROOT/etc/ssl/host-ca.crt"; fi
  unshare --mount --propagation private -- /bin/bash -c '
    set -e
    r="$1"; src="$2"; shift 2
    mount -t proc proc "$r/proc"
    mount --rbind /dev "$r/dev"
    if [[ -n "$src" ]]; then mkdir -p "$r/src"; mount --bind "$src" "$r/src"; fi
    exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
  ' trixie-run "$TRIXIE_ROOT" "${TRIXIE_SRC:-}" "$@"
}

# debian_root SUITE DIR: a minimal Debian SUITE root in DIR, made with
# debootstrap (installed first if missing) from this machine's own mirror,
# in which services never start. Shared by the trixie root above and Home
# Assistant's forky root (ha.sh). Says why when it fails.
debian_root() {
  local suite="$1" dir="$2" tmp="$2.tmp" mirror script=()
  if ! command -v debootstrap >/dev/null; then
    echo "${prog:-setup}: installing debootstrap"
    apt-get update -qq
    # bookworm's own debootstrap knows trixie too; backports' is newer.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  mirror="$(trixie_mirror)" || return 1
  # bookworm's debootstrap has no script for the suites after trixie; sid's makes them.
  [[ -e "/usr/share/debootstrap/scripts/$suite" ]] || script=(/usr/share/debootstrap/scripts/sid)
  echo "${prog:-setup}: making the Debian $suite root $dir (debootstrap from $mirror)"
  rm -rf "$tmp" "$dir"
  mkdir -p "$(dirname "$dir")"
  if ! debootstrap --variant=minbase "$suite" "$tmp" "$mirror" "${script[@]}" > "$tmp.log" 2>&1; then
    echo "${prog:-setup}: debootstrap of Debian $suite failed; the end of $tmp.log:" >&2
    tail -n 15 "$tmp.log" >&2
    return 1
  fi
  mv "$tmp" "$dir"
  rm -f "$tmp.log"
  # Services must not start in the root.
  printf '#!/bin/sh\nexit 101\n' > "$dir/usr/sbin/policy-rc.d"
  chmod +x "$dir/usr/sbin/policy-rc.d"
}

# Makes the root if it is missing or out of date. Cold: debootstrap (~40 s)
# and ~350 MB of packages (a few minutes).
trixie_root_ensure() {
  trixie_need_root || return 1
  local want
  want="trixie ${TRIXIE_PACKAGES[*]}"
  if [[ -f "$TRIXIE_STAMP" && "$(cat "$TRIXIE_STAMP")" == "$want" ]]; then return 0; fi
  debian_root trixie "$TRIXIE_ROOT" || return 1
  echo "${prog:-trixie}: installing ${TRIXIE_PACKAGES[*]} in the root"
  if ! trixie_run /bin/sh -c '
      set -e
      dpkg --add-architecture arm64
      dpkg --add-architecture armhf
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
      apt-get clean
    ' sh "${TRIXIE_PACKAGES[@]}" > "$TRIXIE_ROOT/.install.log" 2>&1; then
    echo "${prog:-trixie}: apt-get install in the root failed; the end of $TRIXIE_ROOT/.install.log:" >&2
    tail -n 15 "$TRIXIE_ROOT/.install.log" >&2
    return 1
  fi
  echo "$want" > "$TRIXIE_STAMP"
  echo "${prog:-trixie}: root ready: $(trixie_run rustc --version)"
}

# Cross-builds the release binaries for TARGET (a Rust target triple) from
# the checkout SRC: they land in $TRIXIE_ROOT/build/target/TARGET/release.
# The crates come from crates.io at the versions of Cargo.lock (--locked).
trixie_cross_build() { # SRC TARGET [CARGO ARGS...]
  local src="$1" target="$2"
  shift 2
  local gcc="${TRIXIE_GCC[$target]:?unknown target $target}"
  local tvar="${target//-/_}"
  TRIXIE_SRC="$src" trixie_run /usr/bin/env \
    CARGO_HOME=/build/cargo-home CARGO_TARGET_DIR=/build/target CARGO_HTTP_CAINFO=/etc/ssl/host-ca.crt \
    "CARGO_TARGET_${tvar^^}_LINKER=$gcc" "CC_$tvar=$gcc" "AR_$tvar=${gcc%-gcc}-ar" \
    PKG_CONFIG_ALLOW_CROSS=1 "PKG_CONFIG_LIBDIR=/usr/lib/${gcc%-gcc}/pkgconfig:/usr/share/pkgconfig" \
    /bin/sh -c 'cd /src && exec cargo build --locked --release --target "$@"' sh "$target" "$@"
  TRIXIE_BIN_DIR="$TRIXIE_ROOT/build/target/$target/release"
}
