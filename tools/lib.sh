# Shared by the tools/install-*.sh scripts (sourced, not run).
#
# Built tools live in a cache outside the clone, keyed by what they are built
# from, so a second clone on the same machine (CI runs on a fresh one) links
# them in seconds instead of building them again:
#   $RELAYQ_TOOLS_CACHE/<name>-<hash>/bin/...  (default ~/.cache/relayq/tools)
# .tools/bin/<name> is a symlink into it. Set RELAYQ_TOOLS_CACHE to move it.

shopt -s inherit_errexit
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools"
bin="$tools/bin"
share="$tools/share"
cache="${RELAYQ_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/relayq/tools}"
mkdir -p "$bin" "$share" "$cache"

log() { printf '[tools] %s\n' "$*" >&2; }

hash_of() { cat "$@" | sha256sum | cut -c1-16; }
hash_text() { printf '%s' "$*" | sha256sum | cut -c1-16; }

apt_updated=0
# apt_install PACKAGE...: installs the Debian packages not installed yet.
apt_install() {
  local missing=() pkg sudo=""
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if [ $apt_updated -eq 0 ]; then
    log "apt-get update"
    $sudo apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# cached_build KEY "WHAT" "ABOUT" COMMAND...: makes sure $cache/KEY exists.
# When it does not, COMMAND runs with $out set to an empty directory to fill
# (bin/, share/); on success the directory is moved to $cache/KEY at once, so
# a cache entry is always whole. A lock keeps two clones from building it at
# the same time. WHAT names the tool and ABOUT says how long a build takes,
# for the newcomer watching the first run. Prints the entry's path.
cached_build() {
  local key=$1 what=$2 about=$3
  shift 3
  local entry="$cache/$key"
  if [ ! -d "$entry" ]; then
    exec 9>"$cache/.$key.lock"
    flock 9
    if [ ! -d "$entry" ]; then
      log "building $what ($about; cached for later runs in $cache)"
      local start=$SECONDS
      out="$cache/.$key.partial"
      rm -rf "$out"
      mkdir -p "$out"
      ( export out; "$@" ) >&2 || { log "building $what failed"; return 1; }
      mv "$out" "$entry"
      log "built $what in $((SECONDS - start))s"
    fi
    exec 9>&-
  fi
  printf '%s\n' "$entry"
}

# link_bins ENTRY NAME...: .tools/bin/NAME -> ENTRY/bin/NAME.
link_bins() {
  local entry=$1 name
  shift
  for name in "$@"; do
    [ -x "$entry/bin/$name" ] || { log "$entry/bin/$name missing"; return 1; }
    ln -sfn "$entry/bin/$name" "$bin/$name"
  done
}
