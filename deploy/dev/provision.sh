#!/usr/bin/env bash
# What `make test` needs from the machine, installed from Debian's packages when missing:
# Java and Maven (the local Kafka broker runs from Maven Central's jars), Chromium (the
# console's browser tests; Playwright cannot download its own browser here) and PostgreSQL's
# server binaries (the test session starts a throwaway cluster of its own from them).
# One line per thing it installs; silent when everything is there. Idempotent.
set -euo pipefail

need=()
why=()
want() { need+=("$1"); why+=("$2"); }

command -v java >/dev/null 2>&1 || want openjdk-17-jdk-headless "Java, to run the Kafka broker"
command -v mvn >/dev/null 2>&1 || want maven "Maven, to fetch the broker's jars"
[ -x "${HOOKSTREAM_TEST_CHROMIUM:-/usr/bin/chromium}" ] \
  || want chromium "Chromium, for the console's browser tests"
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
  || want postgresql "PostgreSQL's server binaries, for the store tests"

((${#need[@]})) || exit 0
if [ "$(id -u)" != 0 ]; then
  echo "provision: missing ${need[*]}; install them (as root: apt-get install ${need[*]})" >&2
  exit 1
fi
for i in "${!need[@]}"; do echo "provision: installing ${need[$i]} (${why[$i]})"; done
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
