#!/usr/bin/env bash
# Installs what the Kafka bus adapter's tests need: Java 17 and Maven (Debian packages,
# only when missing), and the jars of a Kafka 4 broker from Maven Central, copied into
# .cache/kafka/libs by `mvn dependency:copy-dependencies` from deploy/infra/kafka/pom.xml.
# Idempotent and fast when done: the jars are fetched again only when the libs dir is
# missing or the pom changed (its sha256 is kept in .cache/kafka/pom.sha256).
# The broker itself is started by the tests' fixture (tests/infra/kafka.py).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pom="$root/deploy/infra/kafka/pom.xml"
cache="$root/.cache/kafka"
libs="$cache/libs"
stamp="$cache/pom.sha256"

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-infra-kafka: installing ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

want="$(sha256sum "$pom" | cut -d' ' -f1)"
if [ -d "$libs" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "setup-infra-kafka: fetching the Kafka broker's jars into $libs" >&2
mkdir -p "$cache"
# Copy into a fresh dir, then swap: an interrupted run never leaves a half-filled libs
# dir that the stamp would vouch for.
rm -rf "$libs.new"
mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$libs.new"
rm -rf "$libs"
mv "$libs.new" "$libs"
echo "$want" > "$stamp"
