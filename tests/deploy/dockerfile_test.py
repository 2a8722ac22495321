#!/usr/bin/python3
"""Static checks of the repository's Dockerfile (Docker cannot run on the CI machine; hadolint is not packaged).

    /usr/bin/python3 tests/deploy/dockerfile_test.py [--bin-dir=build/bin]      (ctest: deploy_dockerfile)

Parses the Dockerfile into stages and checks the rules that matter for the server images: named stages and a
cpu and a cuda target, base images with explicit tags (never latest), apt-get used as in Docker's best
practices (update, --no-install-recommends and removal of the lists in the same RUN), final images of runtime
libraries only (no -dev packages, no compilers, also in the packages they pull in), a numeric non-root user that
matches the Kubernetes Deployment, HEALTHCHECK with clipctl, EXPOSE 8500 8501, the server as ENTRYPOINT with a
config that the image carries, the models and configs copied in. With --bin-dir (a build of clipserve and
clipctl), every library the binaries link must come from a package the cpu image installs.
Standard library only.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = None

FINAL_TARGETS = ("cpu", "cuda")
# In debian:12-slim already (Essential, or needed by apt): the binaries may link them without installing.
BASE_IMAGE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6"}
COMPILERS = re.compile(r"^(gcc|g\+\+|cpp|clang|cmake|ninja-build|make|build-essential|binutils|nvcc|cuda-nvcc)"
                       r"(-[0-9.]+)?$|^cuda-(minimal-build|compiler|toolkit|libraries-dev)")


class Instruction:
    def __init__(self, keyword, args, line):
        self.keyword = keyword
        self.args = args
        self.line = line

    def __repr__(self):
        return f"line {self.line}: {self.keyword} {self.args[:60]}"


class Stage:
    def __init__(self, base, name, line):
        self.base = base
        self.name = name
        self.line = line
        self.instructions = []

    def of(self, keyword):
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text):
    """Returns (global ARG defaults, stages). Joins continuation lines and drops comments, as Docker does."""
    logical, current, start = [], "", None
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if start is None:
            start = number
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        logical.append((start, current.strip()))
        current, start = "", None
    if current.strip():
        logical.append((start, current.strip()))

    global_args, stages = {}, []
    for line, statement in logical:
        keyword, _, args = statement.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, line))
        elif not stages:
            if keyword == "ARG":
                key, _, value = args.partition("=")
                global_args[key] = value.strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, args, line))
    return global_args, stages


def expand(value, variables):
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), value)


def shell_commands(run_args):
    """Splits a RUN's shell command into simple commands (at &&, ||, ; and |), each a list of words."""
    text = run_args
    if text.startswith("["):
        return []
    parts = re.split(r"&&|\|\||;|\|", text)
    out = []
    for part in parts:
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        while words and ("=" in words[0] and not words[0].startswith("-")):
            words = words[1:]  # VAR=value prefixes
        if words:
            out.append(words)
    return out


def apt_installs(instruction):
    """The packages of each `apt-get install` in a RUN."""
    packages = []
    for words in shell_commands(instruction.args):
        if words[:1] == ["apt-get"] and "install" in words:
            after = words[words.index("install") + 1:]
            packages += [w for w in after if not w.startswith("-")]
    return packages


def read(relative):
    with open(os.path.join(REPO, relative)) as f:
        return f.read()


def install_deps_packages():
    text = read("tools/install-deps.sh")
    block = re.search(r"packages=\((.*?)\n\)", text, re.S).group(1)
    words = []
    for line in block.splitlines():
        words += line.split("#", 1)[0].split()
    return set(words)


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.text = read("Dockerfile")
        cls.args, cls.stages = parse_dockerfile(cls.text)
        cls.by_name = {s.name: s for s in cls.stages if s.name}

    def chain(self, stage):
        """The stage and the stages it is built FROM, nearest first."""
        out = [stage]
        while out[-1].base in self.by_name:
            out.append(self.by_name[out[-1].base])
        return out

    def effective(self, stage, keyword):
        """The last `keyword` instruction in effect in `stage` (inherited from parent stages)."""
        for s in self.chain(stage):
            found = s.of(keyword)
            if found:
                return found[-1]
        return None

    def packages(self, stages):
        out = []
        for s in stages:
            for run in s.of("RUN"):
                out += apt_installs(run)
        return out

    def runtime_stages(self):
        seen = []
        for target in FINAL_TARGETS:
            for s in self.chain(self.by_name[target]):
                if s not in seen:
                    seen.append(s)
        return seen

    # ---- structure ----

    def test_every_stage_is_named_and_names_are_unique(self):
        self.assertGreaterEqual(len(self.stages), 3, "multi-stage: build stages and runtime stages")
        names = [s.name for s in self.stages]
        self.assertNotIn(None, names, "every FROM has AS NAME")
        self.assertEqual(len(names), len(set(names)), names)

    def test_has_cpu_and_cuda_targets_and_cpu_is_the_default(self):
        for target in FINAL_TARGETS:
            self.assertIn(target, self.by_name)
        self.assertEqual(self.stages[-1].name, "cpu", "the last stage is what `docker build .` builds")

    def test_base_images_have_explicit_tags_and_none_is_latest(self):
        for s in self.stages:
            if s.base in self.by_name:
                continue
            image = expand(s.base, self.args)
            self.assertNotIn("$", image, f"{s.base}: a global ARG with a default")
            name = image.split("@")[0]
            tag = name.rsplit(":", 1)[1] if ":" in name.split("/")[-1] else None
            self.assertTrue(tag or "@sha256:" in image, f"{image} (line {s.line}) has no tag")
            self.assertNotEqual(tag, "latest", f"{image} (line {s.line})")

    def test_no_add_instructions(self):
        for s in self.stages:
            self.assertEqual(s.of("ADD"), [], "COPY for local files; downloads in RUN with a checksum option")

    # ---- apt-get ----

    def test_apt_get_install_follows_best_practice(self):
        runs = [r for s in self.stages for r in s.of("RUN") if apt_installs(r)]
        self.assertTrue(runs)
        for run in runs:
            commands = [" ".join(c) for c in shell_commands(run.args)]
            install = next(i for i, c in enumerate(commands) if c.startswith("apt-get") and " install" in c)
            self.assertIn("--no-install-recommends", commands[install], run)
            self.assertRegex(commands[install], r"(^| )-(y|yq|qy)( |$)|--yes|--assume-yes", run)
            self.assertTrue(any(c.startswith("apt-get update") for c in commands[:install]),
                            f"{run}: apt-get update in the same RUN, before install")
            self.assertTrue(any(re.match(r"rm -rf /var/lib/apt/lists/\*?", c) for c in commands[install:]),
                            f"{run}: rm -rf /var/lib/apt/lists/* in the same RUN")

    def test_no_apt_get_upgrade(self):
        for s in self.stages:
            for run in s.of("RUN"):
                self.assertNotRegex(run.args, r"apt-get\s+(dist-)?upgrade", run)

    # ---- build stages ----

    def test_build_stages_install_what_the_project_builds_with(self):
        test_only = {"libgtest-dev", "libgmock-dev", "libbenchmark-dev"}
        needed = {p for p in install_deps_packages()
                  if (p.endswith("-dev") or p.startswith("protobuf-compiler")) and p not in test_only}
        needed |= {"cmake", "ninja-build", "g++", "pkg-config"}
        cpu_build = set(self.packages(self.chain(self.by_name["build-cpu"])))
        self.assertEqual(needed - cpu_build, set(), "missing from the cpu build stages")
        cuda_build = set(self.packages(self.chain(self.by_name["build-cuda"])))
        self.assertEqual(needed - {"libtorch-dev"} - cuda_build, set(), "missing from the cuda build stages")
        self.assertNotIn("libtorch-dev", cuda_build, "the cuda build uses an official libtorch, not Debian's")

    def test_cuda_build_uses_an_official_libtorch_2_with_cuda(self):
        stage = self.by_name["build-cuda"]
        url = next((i.args.split("=", 1)[1] for i in stage.of("ARG") if i.args.startswith("LIBTORCH_URL=")), "")
        self.assertRegex(url, r"^https://download\.pytorch\.org/libtorch/cu\d+/libtorch-.*-2\.\d+\.\d+%2Bcu\d+\.zip$")
        run = " ".join(i.args for i in stage.of("RUN"))
        self.assertIn("-DCLIPSERVE_CUDA=ON", run)
        self.assertIn("-DCMAKE_PREFIX_PATH=/opt/libtorch", run)

    # ---- runtime stages ----

    def test_runtime_stages_install_no_dev_packages_and_no_compilers(self):
        for s in self.runtime_stages():
            for p in self.packages([s]):
                self.assertFalse(p.endswith("-dev"), f"stage {s.name}: {p}")
                self.assertIsNone(COMPILERS.match(p), f"stage {s.name}: {p}")
                self.assertNotIn(p, {"curl", "wget", "git"}, f"stage {s.name}: {p}")

    def test_runtime_stages_do_not_copy_the_source_tree(self):
        for s in self.runtime_stages():
            for copy in s.of("COPY"):
                words = copy.args.split()
                self.assertNotEqual([w for w in words if not w.startswith("--")][:1], ["."], copy)

    def test_runtime_package_closure_has_no_dev_packages_or_compilers(self):
        if shutil.which("apt-cache") is None:
            self.skipTest("no apt-cache")
        packages = sorted(set(self.packages(self.chain(self.by_name["cpu"]))))
        result = subprocess.run(
            ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
             "--no-breaks", "--no-replaces", "--no-enhances"] + packages,
            capture_output=True, text=True)
        if result.returncode != 0:
            self.skipTest(f"apt-cache depends failed (no package lists?): {result.stderr.strip()[:200]}")
        closure = {line.strip() for line in result.stdout.splitlines()
                   if line and not line.startswith(" ") and not line.startswith("<")}
        self.assertGreater(len(closure), len(packages))
        bad = sorted(p for p in closure if p.endswith("-dev") or COMPILERS.match(p) or
                     p.startswith(("python3", "perl-modules")))
        self.assertEqual(bad, [], "the cpu image's packages pull these in")

    def test_final_images_run_as_the_numeric_non_root_user_of_the_deployment(self):
        deployment = read("deploy/base/deployment.yaml")
        run_as = re.search(r"runAsUser:\s*(\d+)", deployment).group(1)
        for target in FINAL_TARGETS:
            stage = self.by_name[target]
            self.assertTrue(stage.of("USER"), f"{target}: USER set in the final stage itself")
            user = self.effective(stage, "USER").args.split(":")[0]
            self.assertRegex(user, r"^\d+$", f"{target}: numeric, so that Kubernetes can verify runAsNonRoot")
            self.assertNotEqual(int(user), 0, target)
            self.assertEqual(user, run_as, f"{target}: the Deployment's runAsUser")
            # Nothing runs as root after USER in the final stage.
            after = stage.instructions[stage.instructions.index(stage.of("USER")[-1]):]
            self.assertFalse([i for i in after if i.keyword == "USER" and i.args.split(":")[0] in ("root", "0")])

    def test_final_images_have_a_clipctl_healthcheck(self):
        for target in FINAL_TARGETS:
            health = self.effective(self.by_name[target], "HEALTHCHECK")
            self.assertIsNotNone(health, target)
            self.assertNotEqual(health.args.upper(), "NONE", target)
            self.assertRegex(health.args, r"--start-period=\d+", target)
            self.assertRegex(health.args, r'CMD \[.*clipctl", .*"health"\]', target)

    def test_final_images_expose_8500_and_8501(self):
        for target in FINAL_TARGETS:
            ports = set()
            for s in self.chain(self.by_name[target]):
                for e in s.of("EXPOSE"):
                    ports |= {p.split("/")[0] for p in e.args.split()}
            self.assertLessEqual({"8500", "8501"}, ports, target)

    def test_final_images_run_the_server_with_the_config_they_carry(self):
        configs = {"cpu": "deploy/base/clipserve.textproto", "cuda": "deploy/overlays/gpu/clipserve.textproto"}
        for target in FINAL_TARGETS:
            stage = self.by_name[target]
            entrypoint = self.effective(stage, "ENTRYPOINT")
            cmd = self.effective(stage, "CMD")
            self.assertIsNotNone(entrypoint, target)
            self.assertTrue(entrypoint.args.startswith("["), f"{target}: exec form, so SIGTERM reaches the server")
            self.assertRegex(entrypoint.args, r'^\["[^"]*/clipserve"\]$', target)
            config = re.search(r'--config=([^"\s]+)', cmd.args).group(1)
            copies = [c.args.split() for s in self.chain(stage) for c in s.of("COPY") if "--from" not in c.args]
            self.assertIn([configs[target], config], copies, f"{target}: COPY {configs[target]} {config}")

    def test_final_images_carry_the_models_and_configs(self):
        for target in FINAL_TARGETS:
            copies = [c.args.split() for s in self.chain(self.by_name[target]) for c in s.of("COPY")
                      if "--from" not in c.args]
            sources = {c[0].rstrip("/") for c in copies}
            self.assertIn("models", sources, target)
            self.assertIn("configs", sources, target)
            # configs/default.textproto names ../models/...: both under one folder keep those paths valid.
            dest = {c[0].rstrip("/"): c[-1].rstrip("/") for c in copies}
            self.assertEqual(os.path.dirname(dest["models"]), os.path.dirname(dest["configs"]), target)

    def test_copied_local_files_exist(self):
        for s in self.stages:
            for copy in s.of("COPY"):
                if "--from" in copy.args:
                    continue
                words = [w for w in copy.args.split() if not w.startswith("--")]
                for source in words[:-1]:
                    self.assertTrue(os.path.exists(os.path.join(REPO, source)), f"{copy}: {source}")

    def test_dockerignore_keeps_build_outputs_and_node_modules_out(self):
        patterns = [line.strip() for line in read(".dockerignore").splitlines()
                    if line.strip() and not line.startswith("#")]
        for needed in ("build*", ".git", "**/node_modules"):
            self.assertIn(needed, patterns)
        for kept in ("deploy", "configs", "models", "server", "proto"):
            self.assertFalse(any(p.strip("/") == kept for p in patterns), kept)

    # ---- the binaries' libraries ----

    def test_cpu_image_installs_every_package_the_binaries_link(self):
        if BIN_DIR is None:
            self.skipTest("no --bin-dir")
        binaries = [os.path.join(BIN_DIR, b) for b in ("clipserve", "clipctl")]
        if not all(os.path.exists(b) for b in binaries) or not (shutil.which("ldd") and shutil.which("dpkg")):
            self.skipTest("binaries, ldd or dpkg missing")
        installed = set(self.packages(self.chain(self.by_name["cpu"]))) | BASE_IMAGE_PACKAGES
        missing = {}
        for binary in binaries:
            needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]",
                                    subprocess.run(["readelf", "-d", binary], capture_output=True,
                                                   text=True).stdout))
            paths = {}
            for line in subprocess.run(["ldd", binary], capture_output=True, text=True).stdout.splitlines():
                m = re.match(r"\s*(\S+) => (\S+)", line)
                if m:
                    paths[m.group(1)] = m.group(2)
            for library in sorted(needed):
                path = paths.get(library)
                self.assertIsNotNone(path, f"{binary}: {library} does not resolve here")
                owner = subprocess.run(["dpkg", "-S", os.path.realpath(path)], capture_output=True, text=True)
                if owner.returncode != 0:
                    owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
                package = owner.stdout.split(":", 1)[0]
                if package not in installed:
                    missing[library] = package
        self.assertEqual(missing, {}, "libraries the binaries link, by the package that owns them")


if __name__ == "__main__":
    argv = [sys.argv[0]]
    for arg in sys.argv[1:]:
        if arg.startswith("--bin-dir="):
            BIN_DIR = arg.split("=", 1)[1]
        else:
            argv.append(arg)
    unittest.main(argv=argv, verbosity=2)
