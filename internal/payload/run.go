package payload

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remote"
)

// RunOptions adjusts Run.
type RunOptions struct {
	// ManifestExtra are added to the image's JSON manifest (for example the
	// instance type the builder used). They never replace the manifest's own
	// keys.
	ManifestExtra map[string]string
}

// Result describes the image Run wrote.
type Result struct {
	// ImagePath is the local image file.
	ImagePath string
	// SHA256 is the hex SHA-256 of the local image file.
	SHA256 string
	// Compressed is true when the local image is the .img.zst as built.
	Compressed bool
	// Size is the local image file's size in bytes.
	Size int64
	// Files are every file written: the image, its .sha256 and its .json
	// manifest.
	Files []string
	// Timings are how long each phase took.
	Timings map[string]time.Duration
	// RemoteImage is the image's path on the build host.
	RemoteImage string
}

// Phases of Run, as named in its errors and timings.
const (
	PhaseUpload     = "upload"
	PhaseInstallNix = "install nix"
	PhaseBuild      = "build"
	PhaseLocate     = "locate image"
	PhaseChecksum   = "checksum"
	PhaseDownload   = "download"
	PhaseVerify     = "verify"
	PhaseDecompress = "decompress"
)

// logLines is how many of the remote output's last lines an error carries.
const logLines = 30

// stopGrace is how long cleanup on the host may take after ctx ended.
const stopGrace = time.Minute

// Run builds the NixOS SD image on the host behind comm, downloads it into
// cfg.OutputDirectory over several channels, verifies its SHA-256, and
// decompresses it when cfg.Decompress is set. cfg must have been prepared.
// The remote files are removed at the end (on failure too) unless
// cfg.KeepRemoteFiles.
func Run(ctx context.Context, ui packersdk.Ui, comm packersdk.Communicator, cfg *Config, opts RunOptions) (res *Result, err error) {
	if cfg.RemoteDirectory == "" || cfg.OutputDirectory == "" || cfg.Decompress == nil || cfg.DownloadChannels == 0 {
		return nil, errors.New("nixos-sd: internal error: the configuration was not prepared before the build")
	}
	r := &run{ctx: ctx, ui: ui, comm: comm, cfg: cfg, opts: opts, started: time.Now()}
	return r.run()
}

type run struct {
	ctx     context.Context
	ui      packersdk.Ui
	comm    packersdk.Communicator
	cfg     *Config
	opts    RunOptions
	started time.Time
	timer   timer

	createdOut bool
	partials   []string
}

func (r *run) run() (res *Result, err error) {
	cfg := r.cfg
	defer func() {
		if err != nil {
			r.removePartials()
		}
	}()
	if err := r.prepareOutput(); err != nil {
		return nil, err
	}
	defer r.cleanupRemote()

	if err := r.upload(); err != nil {
		return nil, phaseErr(PhaseUpload, err, nil)
	}
	if err := r.ensureNix(); err != nil {
		return nil, err
	}
	if err := r.build(); err != nil {
		return nil, err
	}

	done := r.timer.track(PhaseLocate)
	image, info, err := r.locate()
	done()
	if err != nil {
		return nil, phaseErr(PhaseLocate, err, nil)
	}
	r.ui.Say(fmt.Sprintf("Built %s (%s)", image, humanBytes(info.size)))

	// The remote checksum runs while the image downloads.
	type sumResult struct {
		sum string
		err error
	}
	sumCh := make(chan sumResult, 1)
	sumCtx, cancelSum := context.WithCancel(r.ctx)
	defer cancelSum()
	go func() {
		defer r.timer.track(PhaseChecksum)()
		s, err := remoteSHA256(sumCtx, r.comm, image)
		sumCh <- sumResult{s, err}
	}()

	base := path.Base(image)
	zst := strings.HasSuffix(base, ".zst")
	decompress := zst && *cfg.Decompress
	tmp := filepath.Join(cfg.OutputDirectory, base+".partial")
	final := cfg.ImageName
	switch {
	case final != "":
	case decompress:
		final = strings.TrimSuffix(base, ".zst")
	default:
		final = base
	}
	finalTmp := tmp
	if decompress {
		finalTmp = filepath.Join(cfg.OutputDirectory, final+".partial")
		if finalTmp == tmp {
			// image_name is the .zst's own name: keep the two files apart.
			finalTmp = filepath.Join(cfg.OutputDirectory, final+".decompressed.partial")
		}
	}

	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o644)
	if err != nil {
		return nil, phaseErr(PhaseDownload, fmt.Errorf("creating %s: %w", tmp, err), nil)
	}
	r.partials = append(r.partials, tmp)
	defer f.Close()

	// The local SHA-256 (and, for a .img.zst, the decompression) follow the
	// download: each reads the contiguous prefix of fully arrived ranges
	// from the partial file as it grows, so that little is left to do when
	// the last range lands.
	tracker := newPrefixTracker(info.size)
	localCtx, cancelLocal := context.WithCancel(r.ctx)
	type hashResult struct {
		sum string
		err error
	}
	hashCh := make(chan hashResult, 1)
	go func() {
		s, err := hashReader(&prefixReader{ctx: localCtx, t: tracker, f: f})
		hashCh <- hashResult{s, err}
	}()
	type decodeResult struct {
		size  int64
		sum   string
		first []byte
		err   error
	}
	decodeCh := make(chan decodeResult, 1)
	if decompress {
		r.partials = append(r.partials, finalTmp)
		go func() {
			var d decodeResult
			d.size, d.sum, d.first, d.err = decodeSparse(&prefixReader{ctx: localCtx, t: tracker, f: f}, finalTmp)
			decodeCh <- d
		}()
	} else {
		decodeCh <- decodeResult{}
	}
	// Whatever happens, the local work ends before Run returns (and removes
	// the partial files on failure).
	var hashed, decoded bool
	defer func() {
		cancelLocal()
		if !hashed {
			<-hashCh
		}
		if !decoded {
			<-decodeCh
		}
	}()

	if err := r.download(image, info, f, tracker, !zst && info.zstd); err != nil {
		tracker.fail(err)
		return nil, phaseErr(PhaseDownload, err, nil)
	}
	var remoteSum string
	select {
	case s := <-sumCh:
		if s.err != nil {
			return nil, phaseErr(PhaseChecksum, fmt.Errorf("computing the image's SHA-256 on the host: %w", s.err), nil)
		}
		remoteSum = s.sum
	case <-r.ctx.Done():
		return nil, phaseErr(PhaseChecksum, r.ctx.Err(), nil)
	}

	// Verify and decompress time only what is left after the download.
	r.ui.Say("Verifying the download's SHA-256")
	done = r.timer.track(PhaseVerify)
	hr := <-hashCh
	hashed = true
	done()
	if hr.err != nil {
		return nil, phaseErr(PhaseVerify, fmt.Errorf("reading the downloaded file: %w", hr.err), nil)
	}
	if hr.sum != remoteSum {
		return nil, phaseErr(PhaseVerify, fmt.Errorf("the downloaded image's SHA-256 is %s but the host's copy has %s: the transfer was corrupted or the image changed while it downloaded; the partial file was removed, run the build again", hr.sum, remoteSum), nil)
	}
	r.ui.Say("SHA-256 verified: " + remoteSum)

	res = &Result{RemoteImage: image}
	if decompress {
		r.ui.Say(fmt.Sprintf("Decompressing into %s (sparse)", filepath.Join(cfg.OutputDirectory, final)))
		done = r.timer.track(PhaseDecompress)
		d := <-decodeCh
		decoded = true
		done()
		if d.err != nil {
			return nil, phaseErr(PhaseDecompress, fmt.Errorf("decompressing %s: %w", base, d.err), nil)
		}
		if err := checkMBR(d.first); err != nil {
			return nil, phaseErr(PhaseVerify, fmt.Errorf("the built file %s is not an SD card image: %w", base, err), nil)
		}
		f.Close()
		if err := os.Remove(tmp); err != nil {
			return nil, phaseErr(PhaseDecompress, err, nil)
		}
		res.Size, res.SHA256 = d.size, d.sum
	} else {
		<-decodeCh
		decoded = true
		if err := f.Sync(); err != nil {
			return nil, phaseErr(PhaseDownload, fmt.Errorf("writing %s: %w", tmp, err), nil)
		}
		if err := f.Close(); err != nil {
			return nil, phaseErr(PhaseDownload, fmt.Errorf("writing %s: %w", tmp, err), nil)
		}
		if err := checkImageFile(tmp, zst); err != nil {
			return nil, phaseErr(PhaseVerify, fmt.Errorf("the built file %s is not an SD card image: %w", base, err), nil)
		}
		res.Size, res.SHA256, res.Compressed = info.size, remoteSum, zst
	}
	res.ImagePath = filepath.Join(cfg.OutputDirectory, final)
	if err := os.Rename(finalTmp, res.ImagePath); err != nil {
		return nil, phaseErr(PhaseDecompress, err, nil)
	}
	r.partials = append(r.partials, res.ImagePath)

	res.Timings = r.timer.snapshot()
	res.Timings["total"] = time.Since(r.started)
	sumFile := res.ImagePath + ".sha256"
	if err := writeFileAtomic(sumFile, []byte(res.SHA256+"  "+final+"\n")); err != nil {
		return nil, fmt.Errorf("nixos-sd: writing %s: %w", sumFile, err)
	}
	r.partials = append(r.partials, sumFile)
	manifest, err := r.manifest(res, final, remoteSum, zst)
	if err != nil {
		return nil, err
	}
	jsonFile := res.ImagePath + ".json"
	if err := writeFileAtomic(jsonFile, manifest); err != nil {
		return nil, fmt.Errorf("nixos-sd: writing %s: %w", jsonFile, err)
	}
	res.Files = []string{res.ImagePath, sumFile, jsonFile}
	r.ui.Say(fmt.Sprintf("Image ready: %s (%s, sha256 %s)", res.ImagePath, humanBytes(res.Size), res.SHA256))
	return res, nil
}

// prepareOutput creates the output directory (emptied first with -force).
func (r *run) prepareOutput() error {
	out := r.cfg.OutputDirectory
	if r.cfg.Force() {
		if err := os.RemoveAll(out); err != nil {
			return fmt.Errorf("nixos-sd: -force: removing the old output_directory %q: %w", out, err)
		}
	}
	if _, err := os.Stat(out); errors.Is(err, os.ErrNotExist) {
		r.createdOut = true
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("nixos-sd: creating output_directory %q: %w", out, err)
	}
	return nil
}

// removePartials deletes every file this run wrote, after a failure.
func (r *run) removePartials() {
	for _, p := range r.partials {
		os.Remove(p)
	}
	if r.createdOut {
		os.Remove(r.cfg.OutputDirectory) // only if empty
	}
}

func (r *run) cleanupRemote() {
	if r.cfg.KeepRemoteFiles {
		r.ui.Say(fmt.Sprintf("keep_remote_files: leaving %s on the host", r.cfg.RemoteDirectory))
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), stopGrace)
	defer cancel()
	if _, err := remote.Output(ctx, r.comm, cleanupCommand(r.cfg)); err != nil {
		r.ui.Error(fmt.Sprintf("nixos-sd: could not remove %s on the host: %v", r.cfg.RemoteDirectory, err))
	}
}

func (r *run) upload() error {
	defer r.timer.track(PhaseUpload)()
	cfg := r.cfg
	rd := cfg.RemoteDirectory
	r.ui.Say(fmt.Sprintf("Uploading the build script and the %s configuration to %s", configSource(cfg), rd))
	if _, err := remote.Output(r.ctx, r.comm, prepareCommand(cfg)); err != nil {
		return fmt.Errorf("creating %s on the host: %w", rd, err)
	}
	if err := r.uploadEmbedded(remoteScript, path.Join(rd, remoteScript)); err != nil {
		return err
	}
	switch {
	case cfg.Flake != "":
		ref, _, _ := strings.Cut(cfg.Flake, "#")
		dir, local := LocalFlakeDir(ref)
		if !local {
			return nil
		}
		return r.uploadDir(dir, path.Join(rd, remoteFlake))
	case cfg.NixOSConfig != "":
		dst := path.Join(rd, remoteConfig)
		if _, err := remote.Output(r.ctx, r.comm, "mkdir -p "+remote.Quote(dst)); err != nil {
			return fmt.Errorf("creating %s on the host: %w", dst, err)
		}
		if err := r.uploadEmbedded("entry.nix", path.Join(rd, remoteDefault)); err != nil {
			return err
		}
		st, err := os.Stat(cfg.NixOSConfig)
		if err != nil {
			return fmt.Errorf("nixos_config: %w", err)
		}
		if st.IsDir() {
			return r.uploadDir(cfg.NixOSConfig, dst)
		}
		return r.uploadFile(cfg.NixOSConfig, path.Join(dst, "configuration.nix"))
	default:
		if len(cfg.SSHAuthorizedKeys) == 0 {
			r.ui.Say("Note: ssh_authorized_keys is empty, so nobody can log in to the built system over SSH")
		}
		if _, err := remote.Output(r.ctx, r.comm, "mkdir -p "+remote.Quote(path.Join(rd, remoteNixOS))); err != nil {
			return fmt.Errorf("creating %s on the host: %w", path.Join(rd, remoteNixOS), err)
		}
		if err := r.uploadEmbedded("default.nix", path.Join(rd, remoteDefault)); err != nil {
			return err
		}
		js, err := settingsJSON(cfg)
		if err != nil {
			return err
		}
		if err := r.comm.Upload(path.Join(rd, remoteSettings), bytes.NewReader(js), nil); err != nil {
			return fmt.Errorf("uploading %s: %w", path.Join(rd, remoteSettings), err)
		}
		return nil
	}
}

func (r *run) uploadEmbedded(name, dst string) error {
	b, err := remoteFiles.ReadFile("remote/" + name)
	if err != nil {
		return err
	}
	if err := r.comm.Upload(dst, bytes.NewReader(b), nil); err != nil {
		return fmt.Errorf("uploading %s to %s: %w", name, dst, err)
	}
	return nil
}

func (r *run) uploadFile(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := r.comm.Upload(dst, f, &st); err != nil {
		return fmt.Errorf("uploading %s to %s: %w", src, dst, err)
	}
	return nil
}

// uploadDir copies the contents of the local directory src into dst.
func (r *run) uploadDir(src, dst string) error {
	if _, err := remote.Output(r.ctx, r.comm, "mkdir -p "+remote.Quote(dst)); err != nil {
		return fmt.Errorf("creating %s on the host: %w", dst, err)
	}
	if err := r.comm.UploadDir(dst, strings.TrimRight(src, "/")+"/", nil); err != nil {
		return fmt.Errorf("uploading the directory %s to %s: %w", src, dst, err)
	}
	return nil
}

func (r *run) ensureNix() error {
	defer r.timer.track(PhaseInstallNix)()
	r.ui.Say("Checking for Nix on the host (installing Debian's nix-bin when it is missing)")
	tail := newLogTail(r.ui, "host: ", logLines)
	st, err := remote.Run(r.ctx, r.comm, ensureNixCommand(r.cfg), tail.Writer(0), tail.Writer(1))
	tail.Flush()
	if err != nil {
		return phaseErr(PhaseInstallNix, err, tail.Tail())
	}
	if st != 0 {
		return phaseErr(PhaseInstallNix, fmt.Errorf("Nix could not be made available on the host (exit status %d). Use a Debian 12+ AMI (Debian 13 recommended) or a host with Nix preinstalled", st), tail.Tail())
	}
	return nil
}

func (r *run) build() error {
	defer r.timer.track(PhaseBuild)()
	cfg := r.cfg
	r.ui.Say(fmt.Sprintf("Building the NixOS SD image (timeout %s): %s", cfg.BuildTimeoutDuration(), buildCommand(cfg)))
	// The host stops the build at build_timeout; this deadline is a backstop
	// for a host that stopped answering.
	ctx, cancel := context.WithTimeout(r.ctx, cfg.BuildTimeoutDuration()+5*time.Minute)
	defer cancel()
	tail := newLogTail(r.ui, "nix: ", logLines)
	st, err := remote.Run(ctx, r.comm, remoteBuildCommand(cfg), tail.Writer(0), tail.Writer(1))
	tail.Flush()
	if err != nil {
		if ctx.Err() != nil {
			r.stopBuild()
			if r.ctx.Err() == nil {
				err = fmt.Errorf("the build did not finish within build_timeout (%s) and the host did not stop it; raise build_timeout", cfg.BuildTimeoutDuration())
			}
		}
		return phaseErr(PhaseBuild, err, tail.Tail())
	}
	switch st {
	case 0:
		return nil
	case 124:
		return phaseErr(PhaseBuild, fmt.Errorf("the build ran longer than build_timeout (%s) and was stopped; raise build_timeout or use a larger instance", cfg.BuildTimeoutDuration()), tail.Tail())
	case 3:
		return phaseErr(PhaseInstallNix, errors.New("Nix is not installed on the host"), tail.Tail())
	case 4:
		return phaseErr(PhaseBuild, errors.New("Nix needs root on this host and passwordless sudo is not available; allow it or run a nix-daemon"), tail.Tail())
	default:
		return phaseErr(PhaseBuild, fmt.Errorf("nix build exited with status %d; see nix's output above (the last lines follow)", st), tail.Tail())
	}
}

// stopBuild asks build.sh on the host to stop the build, after ctx ended.
func (r *run) stopBuild() {
	r.ui.Say("Stopping the remote build")
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), 30*time.Second)
	defer cancel()
	if _, err := remote.Output(ctx, r.comm, stopCommand(r.cfg)); err != nil {
		r.ui.Error(fmt.Sprintf("nixos-sd: could not stop the remote build: %v", err))
	}
}

type imageInfo struct {
	size        int64
	zstd        bool
	maxSessions int
}

// locate finds the one image in the build result and probes it.
func (r *run) locate() (string, imageInfo, error) {
	out, err := remote.Output(r.ctx, r.comm, locateCommand(r.cfg))
	if err != nil {
		return "", imageInfo{}, fmt.Errorf("the build result has no sd-image directory (%v); does the configuration import nixpkgs' sd-image module?", err)
	}
	var images []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			images = append(images, l)
		}
	}
	sort.Strings(images)
	switch len(images) {
	case 0:
		return "", imageInfo{}, fmt.Errorf("the build result's sd-image directory holds no .img or .img.zst file")
	case 1:
	default:
		return "", imageInfo{}, fmt.Errorf("the build result's sd-image directory holds %d images (%s); expected exactly one", len(images), strings.Join(images, ", "))
	}
	image := images[0]
	out, err = remote.Output(r.ctx, r.comm, probeCommand(image))
	if err != nil {
		return "", imageInfo{}, fmt.Errorf("reading the size of %s: %w", image, err)
	}
	info, err := parseProbe(out)
	if err != nil {
		return "", imageInfo{}, fmt.Errorf("reading the size of %s: %w", image, err)
	}
	return image, info, nil
}

func parseProbe(out string) (imageInfo, error) {
	info := imageInfo{size: -1}
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if !ok {
			continue
		}
		switch k {
		case "size":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return info, fmt.Errorf("unexpected size %q", v)
			}
			info.size = n
		case "zstd":
			info.zstd = v == "yes"
		case "maxsessions":
			if n, err := strconv.Atoi(v); err == nil {
				info.maxSessions = n
			}
		}
	}
	if info.size < 0 {
		return info, fmt.Errorf("stat printed no size: %q", out)
	}
	return info, nil
}

// sessionReserve is how many of sshd's sessions the download leaves to
// others: the checksum running alongside it, a periodic command of the caller
// (the builder's heartbeat) and one spare.
const sessionReserve = 3

// channelsFor is how many channels to open: download_channels, but few enough
// that, with sessionReserve others, they stay within sshd's MaxSessions (10
// unless configured): opening one session too many makes Packer's SSH
// communicator drop the whole connection, and every command on it.
func channelsFor(want, maxSessions int) int {
	if maxSessions <= 0 {
		maxSessions = 10
	}
	if limit := maxSessions - sessionReserve; want > limit {
		want = max(limit, 1)
	}
	return want
}

func remoteSHA256(ctx context.Context, comm packersdk.Communicator, image string) (string, error) {
	out, err := remote.Output(ctx, comm, sha256Command(image))
	if err != nil {
		return "", err
	}
	f := strings.Fields(out)
	if len(f) == 0 || len(f[0]) != 64 || strings.Trim(f[0], "0123456789abcdef") != "" {
		return "", fmt.Errorf("sha256sum printed %q, not a checksum", strings.TrimSpace(out))
	}
	return f[0], nil
}

// download fetches the remote image into f, telling tracker of every range
// that fully arrived. The caller owns f.
func (r *run) download(image string, info imageInfo, f *os.File, tracker *prefixTracker, compress bool) error {
	defer r.timer.track(PhaseDownload)()
	channels := channelsFor(r.cfg.DownloadChannels, info.maxSessions)
	how := ""
	if compress {
		how = ", compressed in transit with zstd"
	}
	if channels < r.cfg.DownloadChannels {
		ms := info.maxSessions
		if ms <= 0 {
			ms = 10
		}
		r.ui.Say(fmt.Sprintf("Using %d download channels instead of %d: the host's sshd allows %d sessions per connection (MaxSessions)", channels, r.cfg.DownloadChannels, ms))
	}
	r.ui.Say(fmt.Sprintf("Downloading %s (%s) over %d SSH channels%s", image, humanBytes(info.size), channels, how))

	pr := newProgressReader()
	pr.interval = 100 * time.Millisecond
	bar := r.ui.TrackProgress(path.Base(image), 0, info.size, pr)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		// Not io.Copy(io.Discard, bar): io.Discard reads 8 KiB at a time, and
		// in a plugin every Read is a call to Packer. The buffer is never
		// written to.
		buf := make([]byte, 4<<20)
		for {
			if _, err := bar.Read(buf); err != nil {
				return
			}
		}
	}()
	d := &downloader{comm: r.comm, channels: channels, compress: compress, progress: pr.Add, tracker: tracker}
	start := time.Now()
	err := d.download(r.ctx, image, info.size, f)
	pr.Close()
	<-drained
	bar.Close()
	if err != nil {
		return err
	}
	el := time.Since(start)
	r.ui.Say(fmt.Sprintf("Downloaded %s in %s (%s/s)", humanBytes(info.size), el.Round(100*time.Millisecond), humanBytes(int64(float64(info.size)/max(el.Seconds(), 1e-3)))))
	return nil
}

func (r *run) manifest(res *Result, final, remoteSum string, zst bool) ([]byte, error) {
	cfg := r.cfg
	m := map[string]any{}
	for k, v := range r.opts.ManifestExtra {
		m[k] = v
	}
	timings := map[string]float64{}
	for k, v := range res.Timings {
		timings[k] = v.Round(time.Millisecond).Seconds()
	}
	m["image"] = final
	m["size"] = res.Size
	m["sha256"] = res.SHA256
	m["compressed"] = res.Compressed
	if zst {
		m["compressed_sha256"] = remoteSum
	}
	m["remote_image"] = res.RemoteImage
	m["config_source"] = configSource(cfg)
	switch configSource(cfg) {
	case "flake":
		m["flake"] = cfg.Flake
		m["nixpkgs"] = "pinned by the flake"
	case "nixos_config":
		m["nixos_config"] = cfg.NixOSConfig
		m["nixpkgs"] = cfg.Nixpkgs
	default:
		m["nixpkgs"] = cfg.Nixpkgs
		m["hostname"] = cfg.Hostname
	}
	m["timings_seconds"] = timings
	m["created"] = time.Now().UTC().Format(time.RFC3339)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func writeFileAtomic(name string, data []byte) error {
	tmp := name + ".partial"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
