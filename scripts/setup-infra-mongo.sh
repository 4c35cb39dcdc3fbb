#!/usr/bin/env bash
# Installs the MongoDB stand-in the Mongo adapters' tests run against
# (mongo-java-server, from Maven Central) into .cache/mongo/. Idempotent: a stamp
# holding the hash of the pom and the launcher makes a second run return at once.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/deploy/infra/mongo"
cache="$root/.cache/mongo"
stamp="$cache/stamp"

want="$(cat "$src/pom.xml" "$src/Launcher.java" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$cache/classes/Launcher.class" ]; then
    exit 0
fi

missing=()
command -v javac >/dev/null || missing+=(default-jdk-headless)
command -v mvn >/dev/null || missing+=(maven)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup-infra-mongo: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "setup-infra-mongo: fetching mongo-java-server into $cache" >&2
rm -rf "$cache/lib" "$cache/classes" "$stamp"
mkdir -p "$cache/lib" "$cache/classes"
mvn -B -q -Dstyle.color=never -f "$src/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$cache/lib"
javac -cp "$cache/lib/*" -d "$cache/classes" "$src/Launcher.java"
echo "$want" > "$stamp"
