"""``include:``: included files' jobs merged into the plan, and every problem named by the
file and line it is written at -- from the records a run keeps (``IncludedFile``), as
planning reads them, and read from a directory (``cyclone run``'s source).
(Includes from other projects' Git repositories: tests/workermanager/test_includes.py.)"""

from __future__ import annotations

import hashlib
from pathlib import Path
from textwrap import dedent

import pytest

from cyclone.includes import DirectoryIncludes
from shared.errors import IncludeError, PipelineError
from shared.pipeline import load
from shared.pipeline.include import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_FILES,
    IncludedFile,
    Key,
    included_files,
    resolve,
)
from shared.pipeline.lint import check_secrets, lint

FILE = ".cyclone.yml"
IMAGE = "cyclone-test/busybox:latest"
COMMIT = "c" * 40


def own(file: str, text: str) -> IncludedFile:
    """A file of the run's own source, as the run recorded it."""
    return IncludedFile.read(("", "", file), COMMIT, dedent(text))


def other(project: str, ref: str, file: str, text: str) -> IncludedFile:
    """Another project's file at ``ref``, as the run recorded it."""
    return IncludedFile.read((project, ref, file), COMMIT, dedent(text))


def job(name: str, *extra: str) -> str:
    """A valid job, written at the indent of a ``jobs:`` mapping's entries."""
    lines = [f"  {name}:", f"    image: {IMAGE}", *(f"    {line}" for line in extra),
             "    steps: [{run: make}]"]
    return "\n".join(lines) + "\n"


def problems(text: str, *includes: IncludedFile) -> list[str]:
    return [str(d) for d in lint(dedent(text), FILE, includes=includes)]


LINT = own("ci/lint.yml", "jobs:\n" + job("lint"))


def test_included_jobs_come_first_and_may_need_the_files_own() -> None:
    test = own("ci/test.yml", "jobs:\n" + job("test", "needs: [build]"))
    text = ('include: [ci/lint.yml, {file: ./ci//test.yml}]\nenv: {GLOBAL: "1"}\njobs:\n'
            + job("build", "needs: [lint]"))
    result = load(text, FILE, includes=[LINT, test])
    plan = result.plan
    assert [j.name for j in plan.jobs] == ["lint", "build", "test"]
    assert plan.job("test").needs == ("build",)
    assert plan.job("test").env == {"GLOBAL": "1"}  # the pipeline file's env: every job's
    assert plan.source_file == FILE and result.warnings == []


def test_a_file_of_includes_only_needs_no_jobs_of_its_own() -> None:
    plan = load("include: ci/lint.yml\n", FILE, includes=[LINT]).plan
    assert [j.name for j in plan.jobs] == ["lint"]


def test_a_single_string_and_a_list_read_alike() -> None:
    as_string = load("include: ci/lint.yml\n", FILE, includes=[LINT]).plan
    as_list = load("include: [ci/lint.yml]\n", FILE, includes=[LINT]).plan
    assert as_string == as_list


def test_a_problem_in_an_included_job_names_that_file_and_line() -> None:
    broken = own("ci/broken.yml", """\
        x-anchor: &image {image: 3}
        jobs:
          broken:
            <<: *image
            needs: [nowhere]
            stepz: []
    """)
    assert problems("include: ci/broken.yml\n", broken) == [
        "ci/broken.yml:1: jobs.broken.image: expected a string, got an integer",
        "ci/broken.yml:3: jobs.broken: missing required key 'steps'",
        "ci/broken.yml:5: jobs.broken.needs: unknown job 'nowhere'",
        "ci/broken.yml:6: jobs.broken.stepz: unknown key 'stepz', did you mean 'steps'?",
    ]


def test_another_projects_file_is_named_by_project_ref_and_path() -> None:
    common = other("shared", "v1.2.0", "ci/common.yml", "jobs:\n  common: {steps: []}\n")
    assert problems("include: {project: shared, ref: v1.2.0, file: ci/common.yml}\n",
                    common) == [
        "shared@v1.2.0:ci/common.yml:2: jobs.common.steps: must not be empty"]


def test_a_local_include_in_another_projects_file_is_that_projects() -> None:
    common = other("shared", "v1", "ci/common.yml", "include: ci/more.yml\n")
    more = other("shared", "v1", "ci/more.yml", "jobs:\n" + job("more"))
    text = "include: {project: shared, ref: refs/tags/v1, file: ci/common.yml}\n"
    assert [j.name for j in load(text, FILE, includes=[common, more]).plan.jobs] == ["more"]
    assert problems(text + "jobs:\n" + job("own"), common) == [
        "shared@v1:ci/common.yml:1: include: shared@v1:ci/more.yml was not fetched for this "
        "run (includes are read with its source)"]


def test_a_job_defined_in_two_files_names_both_places() -> None:
    again = own("ci/again.yml", "jobs:\n" + job("other") + job("lint"))
    assert problems("include: [ci/lint.yml, ci/again.yml]\njobs:\n" + job("lint"),
                    LINT, again) == [
        ".cyclone.yml:3: jobs.lint: job 'lint' is also defined in ci/lint.yml:2, which this "
        "file includes (a job is defined once: rename one)",
        "ci/again.yml:5: jobs.lint: job 'lint' is also defined in ci/lint.yml:2 (a job is "
        "defined once: rename one)",
    ]


def test_an_included_file_holds_only_jobs_and_include() -> None:
    settings = own("ci/settings.yml", """\
        on: push
        env: {A: b}
        notify: {email: a@example.com}
        jobs: {}
    """)
    assert problems("include: ci/settings.yml\njobs:\n" + job("build"), settings) == [
        f"ci/settings.yml:{line}: {key}: '{key}' is read from the pipeline file "
        "(.cyclone.yml) only: an included file holds jobs: and include:"
        for line, key in ((1, "on"), (2, "env"), (3, "notify"))]
    listed = own("ci/list.yml", "- a\n- b\n")
    assert problems("include: ci/list.yml\njobs:\n" + job("b"), listed) == [
        "ci/list.yml:1: expected a mapping holding jobs: (and include:), got a list"]
    jobs_list = own("ci/jobs.yml", "jobs: [a]\n")
    assert problems("include: ci/jobs.yml\njobs:\n" + job("b"), jobs_list) == [
        "ci/jobs.yml:1: jobs: expected a mapping of jobs, got a list"]


def test_malformed_entries_are_named_at_their_line() -> None:
    assert problems("""
        include:
          - ../outside.yml
          - /ci/abs.yml
          - ci/notes.txt
          - {file: ci\\win.yml}
          - {project: shared, file: ci/common.yml}
          - {ref: v1, file: ci/common.yml}
          - {project: shared, ref: refs/heads/main, file: ci/common.yml}
          - {project: shared, ref: HEAD, file: ci/common.yml}
          - {project: shared, ref: "v 1", file: ci/common.yml}
          - {projet: shared, file: a.yml}
          - {file: 3}
          - {file: ""}
          - {}
          - 7
        jobs:
          build: {image: busybox, steps: [{run: make}]}
    """) == [
        ".cyclone.yml:3: include[0]: '../outside.yml': a path in the repository, without '..'",
        ".cyclone.yml:4: include[1]: '/ci/abs.yml': a path in the repository, without a "
        "leading '/'",
        ".cyclone.yml:5: include[2]: 'ci/notes.txt': an included file is a YAML file (.yml "
        "or .yaml)",
        ".cyclone.yml:6: include[3].file: 'ci\\win.yml': use '/' between directories",
        ".cyclone.yml:7: include[4]: missing required key 'ref': an include from project "
        "'shared' names a tag or a full 40-hex commit id, so that every run reads the same "
        "file",
        ".cyclone.yml:8: include[5].ref: 'ref' pins a file of another project: add 'project' "
        "(a file of this repository is read at the run's own commit)",
        ".cyclone.yml:9: include[6].ref: 'refs/heads/main' is a branch, which moves: name a "
        "tag or a full 40-hex commit id, so that every run reads the same file",
        ".cyclone.yml:10: include[7].ref: 'HEAD' is not a tag name or a full 40-hex commit id",
        ".cyclone.yml:11: include[8].ref: 'v 1' is not a tag name or a full 40-hex commit id",
        ".cyclone.yml:12: include[9].projet: unknown key 'projet', did you mean 'project'? "
        "(an include has 'file', and 'project' with 'ref' for another project's)",
        ".cyclone.yml:13: include[10].file: expected a string, got an integer",
        ".cyclone.yml:14: include[11].file: must not be empty",
        ".cyclone.yml:15: include[12]: missing required key 'file'",
        ".cyclone.yml:16: include[13]: expected a file name or a mapping (file, project, "
        "ref), got an integer",
    ]


def test_include_itself_of_the_wrong_kind_or_empty() -> None:
    assert problems("include: 3\njobs:\n" + job("a")) == [
        ".cyclone.yml:1: include: expected a file name, an include (a mapping) or a list "
        "of them, got an integer"]
    assert problems("include: []\njobs:\n" + job("a")) == [
        ".cyclone.yml:1: warning: include: lists no file (remove 'include' if none is meant)"]


def test_an_include_not_fetched_or_that_failed_is_an_error_at_its_entry() -> None:
    failed = IncludedFile.failed(("shared", "v9", "ci/common.yml"), "project 'shared': no "
                                 "tag 'v9' in git://example/shared.git")
    assert problems("""
        include:
          - ci/lint.yml
          - {project: shared, ref: v9, file: ci/common.yml}
        jobs:
          build: {image: busybox, steps: [{run: make}]}
    """, failed) == [
        ".cyclone.yml:3: include[0]: ci/lint.yml was not fetched for this run (includes are "
        "read with its source)",
        ".cyclone.yml:4: include[1]: cannot include shared@v9:ci/common.yml: project "
        "'shared': no tag 'v9' in git://example/shared.git",
    ]


def test_a_cycle_is_rejected_with_its_chain() -> None:
    a = own("ci/a.yml", "include: ci/b.yml\njobs:\n" + job("a"))
    b = own("ci/b.yml", "include: [ci/a.yml]\njobs:\n" + job("b"))
    assert problems("include: ci/a.yml\n", a, b) == [
        "ci/b.yml:1: include[0]: include cycle: ci/a.yml -> ci/b.yml -> ci/a.yml"]
    assert problems("include: .cyclone.yml\njobs:\n" + job("a")) == [
        ".cyclone.yml:1: include: include cycle: .cyclone.yml -> .cyclone.yml"]


def test_a_file_included_twice_is_merged_once() -> None:
    a = own("ci/a.yml", "include: ci/common.yml\njobs:\n" + job("a"))
    b = own("ci/b.yml", "include: ci/common.yml\njobs:\n" + job("b"))
    common = own("ci/common.yml", "jobs:\n" + job("common"))
    plan = load("include: [ci/a.yml, ci/b.yml, ci/common.yml]\n", FILE,
                includes=[a, b, common]).plan
    assert [j.name for j in plan.jobs] == ["common", "a", "b"]


def test_includes_nest_at_most_max_depth_levels() -> None:
    chain = [own(f"ci/{i}.yml", (f"include: ci/{i + 1}.yml\n" if i < MAX_DEPTH else "")
                 + "jobs:\n" + job(f"j{i}")) for i in range(MAX_DEPTH + 1)]
    found = problems("include: ci/0.yml\n", *chain)
    names = " -> ".join([FILE, *(f"ci/{i}.yml" for i in range(MAX_DEPTH + 1))])
    assert found == [f"ci/{MAX_DEPTH - 1}.yml:1: include: includes nest more than "
                     f"{MAX_DEPTH} levels deep: {names}"]
    assert not problems("include: ci/1.yml\n", *chain[1:])  # one level less: fine


def test_at_most_max_files_are_included() -> None:
    files = [own(f"ci/{i}.yml", "jobs:\n" + job(f"j{i}")) for i in range(MAX_FILES + 1)]
    listed = ", ".join(f.file for f in files)
    assert problems(f"include: [{listed}]\n", *files) == [
        f".cyclone.yml:1: include[{MAX_FILES}]: more than {MAX_FILES} files are included"]


def test_secrets_of_included_jobs_are_checked_in_their_file() -> None:
    deploy = own("ci/deploy.yml", "jobs:\n" + job("deploy", "secrets: [TOKEN, NOPE]"))
    found = check_secrets("include: ci/deploy.yml\n", FILE, known={"TOKEN"},
                          includes=[deploy])
    assert [str(d) for d in found] == [
        "ci/deploy.yml:4: jobs.deploy.secrets[1]: unknown secret 'NOPE' (neither a secret "
        "of the project nor a global one)"]
    with pytest.raises(PipelineError, match=r"ci/deploy\.yml:4"):
        load("include: ci/deploy.yml\n", FILE, secrets={"TOKEN"}, includes=[deploy])


def test_diagnostics_come_file_by_file() -> None:
    bad = own("ci/bad.yml", "jobs:\n  bad: {image: 3, steps: [{run: a}]}\n")
    found = problems("include: ci/bad.yml\njobs:\n  own: {image: 3, steps: [{run: a}]}\n",
                     bad)
    assert [line.split(":", 1)[0] for line in found] == [".cyclone.yml", "ci/bad.yml"]


def test_records_round_trip_as_event_data() -> None:
    record = other("shared", "v1", "ci/a.yml", "jobs: {}\n")
    assert included_files([record.to_data()]) == (record,)
    assert record.sha256 == hashlib.sha256(b"jobs: {}\n").hexdigest()
    assert record.commit == COMMIT and not record.error
    assert record.display == "shared@v1:ci/a.yml" and LINT.display == "ci/lint.yml"


# --- resolve: reading what a file includes ----------------------------------------------


async def no_project(key: Key) -> IncludedFile:
    raise IncludeError(f"no project '{key[0]}'")


async def test_resolve_reads_every_level_from_a_directory(tmp_path: Path) -> None:
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "a.yml").write_text("include: [ci/b.yml, ci/gone.yml]\njobs:\n"
                                           + job("a"))
    (tmp_path / "ci" / "b.yml").write_text("jobs:\n" + job("b"))
    text = "include: [ci/a.yml, {project: shared, ref: v1, file: x.yml}]\n"
    records = await resolve(text, FILE, DirectoryIncludes(tmp_path, no_project))
    assert [(r.display, r.error) for r in records] == [
        ("ci/a.yml", ""), ("shared@v1:x.yml", "no project 'shared'"), ("ci/b.yml", ""),
        ("ci/gone.yml", f"no file ci/gone.yml in {tmp_path}")]
    assert records[2].content == (tmp_path / "ci" / "b.yml").read_text()
    assert problems(text, *records) == [
        ".cyclone.yml:1: include[1]: cannot include shared@v1:x.yml: no project 'shared'",
        "ci/a.yml:1: include[1]: cannot include ci/gone.yml: no file ci/gone.yml in "
        f"{tmp_path}"]


async def test_resolve_refuses_links_out_of_the_source_and_huge_files(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (tmp_path / "secret.yml").write_text("jobs: {}\n")
    (source / "link.yml").symlink_to(tmp_path / "secret.yml")
    (source / "huge.yml").write_text("#" * (MAX_BYTES + 1))
    records = await resolve("include: [link.yml, huge.yml]\n", FILE,
                            DirectoryIncludes(source, no_project))
    assert [r.error for r in records] == [
        f"link.yml leads out of {source} (a symbolic link?)",
        f"it is larger than {MAX_BYTES // 1024} KiB"]
    assert all(r.content == "" for r in records)


async def test_resolve_fetches_nothing_for_a_file_without_include(tmp_path: Path) -> None:
    assert await resolve("jobs:\n" + job("a"), FILE, DirectoryIncludes(tmp_path,
                                                                        no_project)) == ()
    assert await resolve("jobs: [", FILE, DirectoryIncludes(tmp_path, no_project)) == ()


async def test_resolve_stops_at_a_cycle(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text("include: b.yml\n")
    (tmp_path / "b.yml").write_text("include: a.yml\n")
    records = await resolve("include: a.yml\n", FILE, DirectoryIncludes(tmp_path, no_project))
    assert [r.file for r in records] == ["a.yml", "b.yml"]
    assert problems("include: a.yml\njobs:\n" + job("a"), *records) == [
        "b.yml:1: include: include cycle: a.yml -> b.yml -> a.yml"]
