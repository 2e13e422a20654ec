#!/bin/sh
# qpod's systemd user environment generator (systemd.environment-generator(7)), installed by
# scripts/setup.sh as /usr/local/lib/systemd/user-environment-generators/60-qpod. For a user who
# ran 'qpod activate' it prints the desktop session's LD_PRELOAD (with a literal $LIB, which an
# environment.d file cannot say: there $LIB expands to nothing) and qpod's variables, so every
# program of the session, and everything those start, carries the preload library. It prints
# nothing for other users, nothing when the library is gone, and never fails the session.
# where qpod keeps its config, as qpod itself finds it
f=${QPOD_CONFIG_DIR:-${XDG_CONFIG_HOME:-$HOME/.config}/qpod}/activation/session.sh
[ -f "$f" ] || exit 0
# the file decides what every program of the session loads: only the user's own, and only when
# nobody else can write it
[ -O "$f" ] || exit 0
[ -z "$(find "$f" -prune -perm /022 2>/dev/null)" ] || exit 0
. "$f" 2>/dev/null || exit 0
[ -n "${QPOD_PRELOAD-}" ] || exit 0  # the library is gone: nothing to say
for var in LD_PRELOAD QPOD_PRELOAD QPOD_RULES QPOD_CONFIG_DIR QPOD_STATE_DIR; do
  eval "val=\${$var-}"
  # double-quoted, with what systemd's parser unescapes there escaped: the value stays literal
  printf '%s="%s"\n' "$var" "$(printf '%s' "$val" | sed 's/[\\"`$]/\\&/g')"
done
exit 0
