#!/usr/bin/env bash
# Regenerates the JUnit XML samples of tests/fixtures/junit/ by running real test
# tools on tiny projects written below, so shared/reports/junit.py is tested on what
# those tools really write, not on what we think they write:
#   pytest.xml           pytest --junitxml (root <testsuites>): pass, fail, error in a
#                        fixture, skip, xfail, a failure plus a teardown error in one case
#   surefire/TEST-*.xml  Maven Surefire running JUnit 5 (Jupiter) tests (root <testsuite>)
#   gotestsum.xml        gotestsum --junitfile over a Go package (root <testsuites>)
# For regeneration only: the tests and CI read the committed files and need neither
# Maven nor Go. Needs the project's .venv, mvn with Java 17, go (installs gotestsum).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=$repo/tests/fixtures/junit
surefire_version=3.6.1
jupiter_version=5.14.4
compiler_version=3.16.0
gotestsum_version=v1.13.0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out/surefire"

pytest_sample() {
  mkdir -p "$work/py"
  cat >"$work/py/test_sample.py" <<'EOF'
import pytest


@pytest.fixture
def broken() -> None:
    raise RuntimeError("the fixture could not connect")


@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("teardown left a file behind")


def test_adds() -> None:
    assert 1 + 1 == 2


@pytest.mark.parametrize("n", [1, 2])
def test_even(n: int) -> None:
    assert n % 2 == 0, f"{n} is odd"


def test_uses_broken(broken: None) -> None:
    pass


@pytest.mark.skip(reason="needs a GPU")
def test_skipped() -> None:
    pass


@pytest.mark.xfail(reason="known bug 12")
def test_known_bug() -> None:
    assert False


def test_fails_then_teardown_errors(bad_teardown: None) -> None:
    assert "abc" == "abd"
EOF
  # A failing run is what we want: its exit code 1 says nothing about the report.
  (cd "$work/py" && "$repo/.venv/bin/python" -m pytest -q -p no:cacheprovider \
    --junitxml="$out/pytest.xml" test_sample.py) || true
}

maven_sample() {
  local dir=$work/mvn
  mkdir -p "$dir/src/test/java/example"
  cat >"$dir/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>example</groupId>
  <artifactId>junit-sample</artifactId>
  <version>1</version>
  <properties>
    <maven.compiler.release>17</maven.compiler.release>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
  </properties>
  <dependencies>
    <dependency>
      <groupId>org.junit.jupiter</groupId>
      <artifactId>junit-jupiter</artifactId>
      <version>$jupiter_version</version>
      <scope>test</scope>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-compiler-plugin</artifactId>
        <version>$compiler_version</version>
      </plugin>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-surefire-plugin</artifactId>
        <version>$surefire_version</version>
        <configuration><testFailureIgnore>true</testFailureIgnore></configuration>
      </plugin>
    </plugins>
  </build>
</project>
EOF
  cat >"$dir/src/test/java/example/CalculatorTest.java" <<'EOF'
package example;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Disabled;
import org.junit.jupiter.api.Test;

class CalculatorTest {
    @Test
    void adds() {
        assertEquals(4, 2 + 2);
    }

    @Test
    void divides() {
        assertEquals(3, 7 / 2, "7 / 2 rounds down");
        assertEquals(4, 7 / 2, "7 / 2 is not 4");
    }

    @Test
    void throwsUnexpectedly() {
        throw new IllegalStateException("the calculator is closed");
    }

    @Test
    @Disabled("not written yet")
    void multiplies() {
    }
}
EOF
  (cd "$dir" && mvn -q -B test) || true
  rm -f "$out"/surefire/TEST-*.xml
  cp "$dir"/target/surefire-reports/TEST-*.xml "$out/surefire/"
}

go_sample() {
  local dir=$work/go
  mkdir -p "$dir"
  GOBIN="$work/bin" go install "gotest.tools/gotestsum@$gotestsum_version"
  cat >"$dir/go.mod" <<'EOF'
module example.com/sample

go 1.22
EOF
  cat >"$dir/sample_test.go" <<'EOF'
package sample

import "testing"

func TestAdds(t *testing.T) {
	if 1+1 != 2 {
		t.Fatal("1+1 is not 2")
	}
}

func TestDivides(t *testing.T) {
	if got := 7 / 2; got != 4 {
		t.Errorf("7 / 2 = %d, want 4", got)
	}
}

func TestSkipped(t *testing.T) {
	t.Skip("needs a database")
}

func TestTable(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run("even", func(t *testing.T) {
			if n%2 != 0 {
				t.Errorf("%d is odd", n)
			}
		})
	}
}
EOF
  (cd "$dir" && "$work/bin/gotestsum" --junitfile "$out/gotestsum.xml" ./...) || true
}

pytest_sample
maven_sample
go_sample
echo "make-junit-samples: wrote $(cd "$out" && find . -name '*.xml' | sort | tr '\n' ' ')"
