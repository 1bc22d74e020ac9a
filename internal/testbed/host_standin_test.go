package testbed

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// These tests run the stand-in scripts directly (no root, no namespace):
// NIXOS_SD_STANDIN_STATE points them at a temporary state folder. They need
// the test bed's Debian packages (make testbed-deps).

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed; run `make testbed-deps`", tool)
		}
	}
}

func TestStandInScriptsPassShellcheck(t *testing.T) {
	needTools(t, "shellcheck")
	scripts, err := filepath.Glob("standin/*.sh")
	if err != nil || len(scripts) < 2 {
		t.Fatalf("stand-in scripts: %v %v", scripts, err)
	}
	out, err := exec.Command("shellcheck", scripts...).CombinedOutput()
	if err != nil {
		t.Fatalf("shellcheck: %v\n%s", err, out)
	}
}

type standinEnv struct {
	state, bin, sbin, work string
	// realNix stands for the real Nix the stand-in runs first: these unit
	// tests check the realisation and what is handed to the real Nix; the
	// host tests (host_test.go) run the real one.
	realNix string
}

// fakeRealNix records its arguments and succeeds.
const fakeRealNix = `#!/bin/sh
printf '%s\n' "$*" >>"$(dirname "$0")/real-nix-calls.log"
case " $* " in *" --version "*) echo "nix (Nix) 2.26.3" ;; esac
exit 0
`

func newStandinEnv(t *testing.T, opts StandInOptions) *standinEnv {
	t.Helper()
	needTools(t, "sfdisk", "mkfs.vfat", "mkfs.ext4", "mcopy", "zstd", "blkid")
	root := t.TempDir()
	e := &standinEnv{state: filepath.Join(root, "state"), bin: filepath.Join(root, "bin"),
		sbin: filepath.Join(root, "sbin"), work: filepath.Join(root, "work")}
	for _, d := range []string{e.state, e.bin, e.sbin, e.work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := installStandIns(e.bin, e.sbin); err != nil {
		t.Fatal(err)
	}
	e.realNix = filepath.Join(root, "real", "nix.real")
	if err := os.MkdirAll(filepath.Dir(e.realNix), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.realNix, []byte(fakeRealNix), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.state, "standin.conf"), []byte(opts.conf()), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// run runs a stand-in program (nix, nix-build, shutdown...) in e.work.
func (e *standinEnv) run(prog string, args ...string) (stdout, stderr string, code int) {
	dir := e.bin
	if _, err := os.Stat(filepath.Join(e.sbin, prog)); err == nil {
		dir = e.sbin
	}
	cmd := exec.Command(filepath.Join(dir, prog), args...)
	cmd.Dir = e.work
	cmd.Env = append(os.Environ(), "NIXOS_SD_STANDIN_STATE="+e.state, "NIXOS_SD_STANDIN_REAL_NIX="+e.realNix)
	var o, eb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &eb
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	case err != nil:
		code = -1
		eb.WriteString(err.Error())
	}
	return o.String(), eb.String(), code
}

func (e *standinEnv) calls(t *testing.T, name string) []string {
	t.Helper()
	lines, err := readLines(filepath.Join(e.state, name))
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

var storePathRE = regexp.MustCompile(`/store/[0123456789abcdfghijklmnpqrsvwxyz]{32}-nixos-sd-image$`)

const imageName = "nixos-image-sd-card-26.05.20260601.0000000-aarch64-linux.img"

type sfdiskTable struct {
	PartitionTable struct {
		Label      string `json:"label"`
		Partitions []struct {
			Start    int64  `json:"start"`
			Size     int64  `json:"size"`
			Type     string `json:"type"`
			Bootable bool   `json:"bootable"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

// checkImage checks an uncompressed image's layout and file systems.
func checkImage(t *testing.T, img string) {
	t.Helper()
	out, err := exec.Command("sfdisk", "-J", img).Output()
	if err != nil {
		t.Fatalf("sfdisk -J %s: %v", img, err)
	}
	var tab sfdiskTable
	if err := json.Unmarshal(out, &tab); err != nil {
		t.Fatalf("sfdisk -J: %v\n%s", err, out)
	}
	pt := tab.PartitionTable
	if pt.Label != "dos" || len(pt.Partitions) != 2 {
		t.Fatalf("partition table %+v, want dos with 2 partitions", pt)
	}
	fw, root := pt.Partitions[0], pt.Partitions[1]
	if (fw.Type != "b" && fw.Type != "c") || fw.Start != 8*2048 {
		t.Errorf("firmware partition %+v, want FAT32 (b or c) at 8 MiB", fw)
	}
	if root.Type != "83" || !root.Bootable || root.Start < fw.Start+fw.Size {
		t.Errorf("root partition %+v, want bootable Linux (83) after the firmware", root)
	}
	for _, c := range []struct {
		start int64
		want  []string
	}{
		{fw.Start, []string{`LABEL="FIRMWARE"`, `TYPE="vfat"`, `VERSION="FAT32"`}},
		{root.Start, []string{`LABEL="NIXOS_SD"`, `TYPE="ext4"`}},
	} {
		out, err := exec.Command("blkid", "-p", "-O", fmt.Sprint(c.start*512), img).Output()
		if err != nil {
			t.Fatalf("blkid at sector %d: %v", c.start, err)
		}
		for _, w := range c.want {
			if !bytes.Contains(out, []byte(w)) {
				t.Errorf("blkid at sector %d: %s, want %s", c.start, out, w)
			}
		}
	}
	cmd := exec.Command("mtype", "-i", fmt.Sprintf("%s@@%d", img, fw.Start*512), "::/config.txt")
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if out, err := cmd.Output(); err != nil || !bytes.Contains(out, []byte("arm_64bit=1")) {
		t.Errorf("config.txt in the firmware partition: %v %q", err, out)
	}
	if out, err := exec.Command("e2fsck", "-fn", fmt.Sprintf("%s?offset=%d", img, root.Start*512)).CombinedOutput(); err != nil {
		t.Errorf("e2fsck of the root partition: %v\n%s", err, out)
	}
}

func TestStandInNixBuildsAnSDImage(t *testing.T) {
	e := newStandinEnv(t, StandInOptions{ImageMiB: 56})

	if out, _, code := e.run("nix", "--version"); code != 0 || out != "nix (Nix) 2.26.3\n" {
		t.Errorf("nix --version: %d %q", code, out)
	}

	cfg := filepath.Join(e.work, "cfg")
	if err := os.MkdirAll(cfg, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg, "configuration.nix"), []byte("{ }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--extra-experimental-features", "nix-command flakes", "--option", "sandbox", "false",
		"build", "-L", "--print-build-logs", "-I", "nixos-config=" + cfg + "/configuration.nix",
		"-I", "nixpkgs=channel:nixos-26.05", "--file", "<nixpkgs/nixos>", "config.system.build.sdImage", "--out-link", "out/result"}
	if err := os.MkdirAll(filepath.Join(e.work, "out"), 0o755); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := e.run("nix", args...)
	if code != 0 {
		t.Fatalf("nix build: exit %d\n%s", code, stderr)
	}
	if stdout != "" {
		t.Errorf("nix build without --print-out-paths printed %q", stdout)
	}
	for _, want := range []string{"these 2 derivations will be built:", "building '/nix/store/", "nixos-sd-image> "} {
		if !strings.Contains(stderr, want) {
			t.Errorf("nix build's log lacks %q:\n%s", want, stderr)
		}
	}
	link := filepath.Join(e.work, "out", "result")
	target, err := os.Readlink(link)
	if err != nil {
		t.Fatalf("out link: %v", err)
	}
	if !storePathRE.MatchString(target) || !strings.HasPrefix(target, e.state+"/store/") {
		t.Fatalf("out link points at %s", target)
	}
	zst := filepath.Join(link, "sd-image", imageName+".zst")
	fi, err := os.Stat(zst)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "x.img")
	if out, err := exec.Command("zstd", "-dq", zst, "-o", img).CombinedOutput(); err != nil {
		t.Fatalf("zstd -d: %v %s", err, out)
	}
	ifi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if ifi.Size() != 56<<20 {
		t.Errorf("image is %d bytes, want 56 MiB", ifi.Size())
	}
	ratio := float64(ifi.Size()) / float64(fi.Size())
	t.Logf("compression ratio %.2f", ratio)
	if ratio < 2 || ratio > 4.5 {
		t.Errorf("the image compresses %.2f:1; a real one compresses about 3:1", ratio)
	}
	checkImage(t, img)
	products, err := os.ReadFile(filepath.Join(link, "nix-support", "hydra-build-products"))
	if err != nil || string(products) != "file sd-image "+target+"/sd-image/"+imageName+".zst\n" {
		t.Errorf("hydra-build-products: %q %v", products, err)
	}

	// The same inputs give the same store path, without a rebuild.
	stdout, stderr, code = e.run("nix", "build", "--no-link", "--print-out-paths", "-I", "nixos-config="+cfg+"/configuration.nix", "-I", "nixpkgs=channel:nixos-26.05",
		"--file", "<nixpkgs/nixos>", "config.system.build.sdImage", "--extra-experimental-features", "nix-command flakes",
		"--option", "sandbox", "false", "-L", "--print-build-logs")
	if code != 0 || strings.TrimSpace(stdout) != target || strings.Contains(stderr, "will be built") {
		t.Errorf("second build: exit %d, printed %q (want %s), log %q", code, stdout, target, stderr)
	}

	// nix-build prints the store path; nix-build -o.
	stdout, stderr, code = e.run("nix-build", "<nixpkgs/nixos>", "-A", "config.system.build.sdImage", "-o", "nb")
	if code != 0 || !storePathRE.MatchString(strings.TrimSpace(stdout)) {
		t.Errorf("nix-build: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	if got, err := os.Readlink(filepath.Join(e.work, "nb")); err != nil || got != strings.TrimSpace(stdout) {
		t.Errorf("nix-build's out link: %q %v", got, err)
	}
	if out, _, code := e.run("nix-build", "--version"); code != 0 || out != "nix (Nix) 2.26.3\n" {
		t.Errorf("nix-build --version: %d %q", code, out)
	}

	// Expressions other than nixpkgs' version are refused (a flake's
	// attribute is the real Nix's, below); other commands are the real Nix's.
	if _, stderr, code := e.run("nix", "eval", "--raw", "--expr", "1"); code != 1 || !strings.Contains(stderr, "evaluates only nixpkgs' lib.version") {
		t.Errorf("nix eval: exit %d, %q", code, stderr)
	}
	if _, stderr, code := e.run("nix", "store", "ls"); code != 0 {
		t.Errorf("nix store: exit %d, %q", code, stderr)
	}
	// Builds are first evaluated by the real Nix, against the stand-in
	// nixpkgs.
	real, err := readLines(filepath.Join(filepath.Dir(e.realNix), "real-nix-calls.log"))
	if err != nil {
		t.Fatal(err)
	}
	if len(real) != 6 || real[0] != "--version" || !strings.HasSuffix(real[1], " --dry-run --option substituters  --json") ||
		!strings.Contains(real[1], "nixpkgs="+e.bin+"/nixpkgs ") || real[5] != "store ls" {
		t.Errorf("the real nix's calls: %q", real)
	}

	calls := e.calls(t, "standin-calls.log")
	if len(calls) != 7 || calls[0] != "nix --version" ||
		!strings.HasPrefix(calls[1], `nix --extra-experimental-features nix-command\ flakes --option sandbox false build -L`) ||
		!strings.HasPrefix(calls[3], "nix-build ") || calls[5] != "nix eval --raw --expr 1" {
		t.Errorf("standin-calls.log: %q", calls)
	}
}

// TestStandInNixWhatTheBuildUsed: nix eval of nixpkgs' lib and nix flake
// metadata answer as real Nix does for a channel tarball (.git-revision), a
// GitHub archive (no revision) and a flake with and without a lock file.
func TestStandInNixWhatTheBuildUsed(t *testing.T) {
	e := newStandinEnv(t, StandInOptions{})
	const expr = `let lib = import <nixpkgs/lib>; in { version = lib.version; revision = lib.trivial.revisionWithDefault ""; }`
	out, stderr, code := e.run("nix", "eval", "--impure", "--json", "-I", "nixpkgs=channel:nixos-26.05", "--expr", expr)
	if code != 0 || !regexp.MustCompile(`^\{"revision":"0000000[0-9a-f]{33}","version":"26\.05\.20260601\.0000000"\}\n$`).MatchString(out) {
		t.Errorf("nix eval of a channel: exit %d, %q, %s", code, out, stderr)
	}
	again, _, _ := e.run("nix", "eval", "--impure", "--json", "-I", "nixpkgs=channel:nixos-26.05", "--expr", expr)
	other, _, _ := e.run("nix", "eval", "--impure", "--json", "-I", "nixpkgs=channel:nixos-25.11", "--expr", expr)
	if again != out || other == out {
		t.Errorf("a channel's revision is not fixed per channel: %q %q %q", out, again, other)
	}
	out, _, code = e.run("nix", "eval", "--json", "-I", "nixpkgs=https://github.com/NixOS/nixpkgs/archive/0123456789abcdef0123456789abcdef01234567.tar.gz", "--expr", expr)
	if code != 0 || out != `{"revision":"","version":"26.05pre-git"}`+"\n" {
		t.Errorf("nix eval of a GitHub archive: exit %d, %q", code, out)
	}
	if _, stderr, code := e.run("nix", "eval", "--json", "--expr", expr); code != 1 || !strings.Contains(stderr, "was not found in the Nix search path") {
		t.Errorf("nix eval without nixpkgs: exit %d, %q", code, stderr)
	}

	flake := filepath.Join(e.work, "flake")
	os.MkdirAll(flake, 0o755)
	os.WriteFile(filepath.Join(flake, "flake.nix"), []byte("{ outputs = _: { }; }\n"), 0o644)
	out, _, code = e.run("nix", "flake", "metadata", "--json", "path:"+flake)
	if code != 0 || !strings.Contains(out, `"root":{"inputs":{"nixpkgs":"nixpkgs"}}`) || !strings.Contains(out, `"rev":"0000000`) {
		t.Errorf("nix flake metadata without a lock: exit %d, %q", code, out)
	}
	lock := `{"nodes":{"nixpkgs":{"locked":{"rev":"abcd"}},"root":{"inputs":{"nixpkgs":"nixpkgs"}}},"root":"root","version":7}`
	os.WriteFile(filepath.Join(flake, "flake.lock"), []byte(lock+"\n"), 0o644)
	out, _, code = e.run("nix", "flake", "metadata", "--json", "path:"+flake)
	if code != 0 || !strings.HasPrefix(out, `{"locks":`+lock+`,`) || !strings.Contains(out, `"url":"path:`+flake) {
		t.Errorf("nix flake metadata with a lock: exit %d, %q", code, out)
	}
	// A remote flake is locked to a revision fixed per reference, named
	// in its url as real Nix names a locked reference; it has no lock file,
	// and its nixpkgs branch has moved each time it is locked.
	out, _, code = e.run("nix", "flake", "metadata", "--json", "github:me/pi/main")
	var meta remoteMetadata
	json.Unmarshal([]byte(out), &meta)
	if code != 0 || !regexp.MustCompile(`^0000000[0-9a-f]{33}$`).MatchString(meta.Revision) ||
		!regexp.MustCompile(`^github:me/pi/`+meta.Revision+`\?narHash=sha256-[A-Za-z0-9/%]{40,}$`).MatchString(meta.URL) {
		t.Errorf("nix flake metadata of a remote flake: exit %d, %q", code, out)
	}
	again, _, _ = e.run("nix", "flake", "metadata", "--json", "github:me/pi/main")
	var meta2 remoteMetadata
	json.Unmarshal([]byte(again), &meta2)
	if meta2.URL != meta.URL || meta2.Revision != meta.Revision {
		t.Errorf("a remote flake's lock is not fixed per reference: %q, then %q", out, again)
	}
	if r1, r2 := meta.nixpkgs(), meta2.nixpkgs(); !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(r1) || r1 == r2 {
		t.Errorf("a remote flake's nixpkgs branch did not move between two lockings: %q, then %q", r1, r2)
	}
	out, _, _ = e.run("nix", "flake", "metadata", "--json", "git+https://example.org/pi.git?ref=main")
	if !strings.Contains(out, `"url":"git+https://example.org/pi.git?ref=main&rev=0000000`) {
		t.Errorf("nix flake metadata of a git flake: %q", out)
	}
}

// remoteMetadata is what the tests read of `nix flake metadata --json`.
type remoteMetadata struct {
	URL, Revision string
	Locks         json.RawMessage
}

// nixpkgs is the revision of the lock's nixpkgs node.
func (m remoteMetadata) nixpkgs() string {
	var l struct {
		Nodes map[string]struct{ Locked struct{ Rev string } }
	}
	json.Unmarshal(m.Locks, &l)
	return l.Nodes["nixpkgs"].Locked.Rev
}

// TestStandInNixRemoteFlakeReferenceLock: a remote flake (without a
// flake.lock of its own) built with --reference-lock-file of the lock `nix
// flake metadata` printed builds the nixpkgs revision of that lock; without
// it, or with a lock file that does not exist, the build locks the moving
// branch again, as real Nix does. The real Nix here accepts the flag as
// Nix 2.15 and newer do; TestProvisionerLocalFlake runs Debian 13's 2.26.
func TestStandInNixRemoteFlakeReferenceLock(t *testing.T) {
	e := newStandinEnv(t, StandInOptions{})
	out, _, code := e.run("nix", "flake", "metadata", "--json", "github:me/pi/main")
	var meta remoteMetadata
	if err := json.Unmarshal([]byte(out), &meta); code != 0 || err != nil || meta.nixpkgs() == "" {
		t.Fatalf("nix flake metadata: exit %d, %v, %q", code, err, out)
	}
	lock := filepath.Join(e.work, "reference.lock")
	os.WriteFile(lock, append(meta.Locks, '\n'), 0o644)
	const attr = "#nixosConfigurations.rpi4.config.system.build.sdImage"
	build := func(extra ...string) string {
		t.Helper()
		args := append([]string{"build", "--extra-experimental-features", "nix-command flakes", "--out-link", "result"}, extra...)
		if _, stderr, code := e.run("nix", append(args, meta.URL+attr)...); code != 0 {
			t.Fatalf("nix build %q: exit %d: %s", extra, code, stderr)
		}
		recs := e.calls(t, "standin-flake-inputs.log")
		return recs[len(recs)-1]
	}
	if got, want := build("--reference-lock-file", lock), "build "+meta.URL+" nixpkgs "+meta.nixpkgs(); got != want {
		t.Errorf("with the reference lock file: %q, want %q", got, want)
	}
	moved := build()
	if !strings.HasPrefix(moved, "build "+meta.URL+" nixpkgs ") || strings.HasSuffix(moved, meta.nixpkgs()) {
		t.Errorf("without a reference lock file the branch was not locked again: %q", moved)
	}
	if missing := build("--reference-lock-file", filepath.Join(e.work, "none.lock")); missing == moved || strings.HasSuffix(missing, meta.nixpkgs()) {
		t.Errorf("a reference lock file that does not exist: %q", missing)
	}
}

func TestStandInNixFailsOnMarker(t *testing.T) {
	e := newStandinEnv(t, StandInOptions{})
	flake := filepath.Join(e.work, "flake")
	if err := os.MkdirAll(filepath.Join(flake, "hosts"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(flake, "flake.nix"), []byte("{ outputs = _: { }; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(flake, "hosts", "pi.nix"), []byte("{ # STANDIN_FAIL\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(e.work, "configuration.nix")
	if err := os.WriteFile(file, []byte("{ boot.STANDIN_FAIL = true; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"build", "./flake#nixosConfigurations.pi.config.system.build.sdImage", "--out-link", "r1"},
		{"build", "--file", "<nixpkgs/nixos>", "-I", "nixos-config=" + file, "-o", "r2"},
		{"build", "path:" + flake + "#sdImage", "-o", "r3"},
	} {
		stdout, stderr, code := e.run("nix", args...)
		if code != 1 {
			t.Errorf("nix %q: exit %d, want 1 (stdout %q)", args, code, stdout)
		}
		if !regexp.MustCompile(`error: builder for '/nix/store/[0-9a-z]{32}-nixos-sd-image\.drv' failed with exit code 1`).MatchString(stderr) {
			t.Errorf("nix %q said:\n%s", args, stderr)
		}
		if !strings.Contains(stderr, "STANDIN_FAIL found in") {
			t.Errorf("nix %q does not say where STANDIN_FAIL is:\n%s", args, stderr)
		}
		if _, err := os.Lstat(filepath.Join(e.work, args[len(args)-1])); err == nil {
			t.Errorf("nix %q made its out link though the build failed", args)
		}
	}
	if _, stderr, code := e.run("nix-build", file, "-o", "r4"); code != 1 || !strings.Contains(stderr, "failed with exit code 1") {
		t.Errorf("nix-build with STANDIN_FAIL: exit %d %q", code, stderr)
	}
	// An argument that names an existing path with the text in the name.
	named := filepath.Join(e.work, "STANDIN_FAIL.nix")
	if err := os.WriteFile(named, []byte("{ }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := e.run("nix", "build", "-f", named, "-o", "r5"); code != 1 || !strings.Contains(stderr, "STANDIN_FAIL in the name of") {
		t.Errorf("nix build -f %s: exit %d %q", named, code, stderr)
	}
	// The text in an argument that names nothing does not count.
	if _, stderr, code := e.run("nix", "build", "--argstr", "note", "STANDIN_FAIL", "-o", "ok"); code != 0 {
		t.Errorf("STANDIN_FAIL in a plain argument failed the build: %s", stderr)
	}
}

func TestStandInNixUncompressed(t *testing.T) {
	e := newStandinEnv(t, StandInOptions{ImageMiB: 56, Uncompressed: true})
	if _, stderr, code := e.run("nix", "build", "-o", "result"); code != 0 {
		t.Fatalf("nix build: %d %s", code, stderr)
	}
	img := filepath.Join(e.work, "result", "sd-image", imageName)
	if _, err := os.Stat(img + ".zst"); err == nil {
		t.Error("compressed although Uncompressed")
	}
	checkImage(t, img)
}

func TestStandInShutdownOnlyRecords(t *testing.T) {
	e := newStandinEnv(t, StandInOptions{})
	for _, args := range [][]string{{"shutdown", "-h", "now"}, {"poweroff"}, {"halt", "-p"}, {"reboot", "--force", "a b"}} {
		if _, stderr, code := e.run(args[0], args[1:]...); code != 0 {
			t.Errorf("%q: exit %d %s", args, code, stderr)
		}
	}
	want := []string{"shutdown -h now", "poweroff", "halt -p", `reboot --force a\ b`}
	if got := e.calls(t, "shutdown.log"); !equalStrings(got, want) {
		t.Errorf("shutdown.log %q, want %q", got, want)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestStandInNixBuildsWhereNixDoes: the realisation's scratch goes where a
// derivation's build directory would, build-dir else TMPDIR, so a build
// directory that cannot hold it fails as Nix does; the store holds only the
// output afterwards.
func TestStandInNixBuildsWhereNixDoes(t *testing.T) {
	e := newStandinEnv(t, StandInOptions{ImageMiB: 56})
	missing := filepath.Join(e.work, "no-such-dir")
	run := func(env string, args ...string) (string, int) {
		cmd := exec.Command(filepath.Join(e.bin, "nix"), args...)
		cmd.Dir = e.work
		cmd.Env = append(os.Environ(), "NIXOS_SD_STANDIN_STATE="+e.state, "NIXOS_SD_STANDIN_REAL_NIX="+e.realNix, env)
		out, err := cmd.CombinedOutput()
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return string(out), exitErr.ExitCode()
		}
		return string(out), 0
	}
	for _, tc := range []struct {
		env  string
		args []string
	}{
		{"TMPDIR=" + missing, []string{"build", "-o", "r1", "a"}},
		{"TMPDIR=" + e.work, []string{"build", "-o", "r2", "--option", "build-dir", missing, "b"}},
	} {
		out, code := run(tc.env, tc.args...)
		if code != 1 || !strings.Contains(out, "-nixos-sd-image.drv' failed with exit code 1") || !strings.Contains(out, missing) {
			t.Errorf("%s nix %q: exit %d, want the builder failing in %s:\n%s", tc.env, tc.args, code, missing, out)
		}
	}
	scratch := filepath.Join(e.work, "scratch")
	if err := os.Mkdir(scratch, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, code := run("TMPDIR="+e.work, "build", "-o", "r3", "--option", "build-dir", scratch, "c"); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("the build left %v in its build directory", left)
	}
	store, _ := os.ReadDir(filepath.Join(e.state, "store"))
	if len(store) != 1 || !strings.HasSuffix(store[0].Name(), "-nixos-sd-image") {
		t.Errorf("the store holds %v, want the one output", store)
	}
}

// TestStandInNixEvaluatesFlakeAttributes: `nix eval` of a flake's attribute
// (the plugin's platform check) goes to the real Nix, with a local flake's
// nixpkgs input overridden by the stand-in nixpkgs, and a flake the host
// cannot fetch replaced by a local one with the same configuration.
func TestStandInNixEvaluatesFlakeAttributes(t *testing.T) {
	e := newStandinEnv(t, StandInOptions{})
	flake := filepath.Join(e.work, "flake")
	os.MkdirAll(flake, 0o755)
	os.WriteFile(filepath.Join(flake, "flake.nix"), []byte("{ outputs = _: { }; }\n"), 0o644)
	const apply = "c: c.pkgs.stdenv.hostPlatform.system"
	if _, stderr, code := e.run("nix", "eval", "--extra-experimental-features", "nix-command flakes", "--json", "path:"+flake+"#nixosConfigurations.rpi4", "--apply", apply); code != 0 {
		t.Fatalf("nix eval of a local flake: exit %d: %s", code, stderr)
	}
	if _, stderr, code := e.run("nix", "eval", "--json", "github:me/pis#nixosConfigurations.pc", "--apply", apply); code != 0 {
		t.Fatalf("nix eval of a remote flake: exit %d: %s", code, stderr)
	}
	b, _ := os.ReadFile(filepath.Join(filepath.Dir(e.realNix), "real-nix-calls.log"))
	var evals []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if strings.Contains(l, "eval ") && strings.Contains(l, "--apply") {
			evals = append(evals, l)
		}
	}
	if len(evals) != 2 {
		t.Fatalf("the real Nix evaluated %d flake attributes, want 2:\n%s", len(evals), b)
	}
	if want := "path:" + flake + "#nixosConfigurations.rpi4 --apply " + apply + " --override-input nixpkgs path:"; !strings.Contains(evals[0], want) {
		t.Errorf("the local flake's evaluation %q lacks %q", evals[0], want)
	}
	if !regexp.MustCompile(`path:/tmp/nixos-sd-standin-flake\.\w+#nixosConfigurations\.pc --apply `).MatchString(evals[1]) {
		t.Errorf("the remote flake was not replaced by a local one: %q", evals[1])
	}
}
