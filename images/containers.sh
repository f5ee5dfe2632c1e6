#!/usr/bin/env bash
# `make container-setup`: what building and running the images needs on this machine.
#   containers.sh setup TOOL CONF        for TOOL podman: install it, and write CONF
#   containers.sh install COMMAND:PACKAGE...
# podman and runc (and mmdebstrap for `make base-images`) are installed from Debian's packages when missing,
# as root or through sudo. Podman then runs with CONF, written here: Debian's podman defaults to crun, which
# refuses a host with a hybrid cgroup layout, so runc; and it gives containers file and process limits of its
# own, which a runtime without CAP_SYS_RESOURCE cannot set above the host's, so the host's file limit and a
# process limit every host allows.
set -euo pipefail

install_missing() {
  local missing=()
  for command_and_package in "$@"; do
    command -v "${command_and_package%%:*}" >/dev/null || missing+=("${command_and_package#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "installing Debian's ${missing[*]}"
  local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >/dev/null
}

install() {
  install_missing "$@"
}

setup() {
  local tool=$1 conf=$2
  if [ "$tool" != podman ]; then
    "$tool" info >/dev/null 2>&1 || { echo "$tool: no engine answers; CONTAINER_TOOL=podman uses podman" >&2; exit 2; }
    return
  fi
  install_missing podman:podman runc:runc newuidmap:uidmap slirp4netns:slirp4netns
  mkdir -p "$(dirname "$conf")"
  local files; files=$(ulimit -Hn)
  cat > "$conf.tmp" <<CONF
[containers]
default_ulimits = ["nofile=$files:$files", "nproc=4096:4096"]

[engine]
runtime = "runc"
CONF
  mv "$conf.tmp" "$conf"
}

"$@"
