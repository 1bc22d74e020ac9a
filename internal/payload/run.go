package payload

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

// RunOptions adjusts Run.
type RunOptions struct {
	// ManifestExtra are added to the image's JSON manifest (for example the
	// instance type the builder used). They never replace the manifest's own
	// keys.
	ManifestExtra map[string]string
	// Phase, when set, is called as each phase of Run begins (PhaseUpload,
	// PhaseInstallNix, ...); phases of the download may overlap.
	Phase func(phase string)
	// SSH, when set, lets the download open more connections to the host
	// (see download_connections); nil keeps it on comm's connection.
	SSH *SSHTarget
	// AWS is the AWS configuration (credentials, region) the binary cache
	// uses; nil loads the SDK's default chain.
	AWS *aws.Config
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
	// Nixpkgs is the nixpkgs the build used.
	Nixpkgs Nixpkgs
	// Cache is what the build took from and gave to the binary cache; nil
	// without a cache block.
	Cache *CacheReport
	// BuildLog is the file holding everything the build host printed.
	BuildLog string
}

// Run builds the NixOS SD image on the host behind comm, downloads it into
// cfg.OutputDirectory over several channels, verifies its SHA-256, and
// decompresses it when cfg.Decompress is set. cfg must have been prepared.
// The remote files are removed at the end (on failure too) unless
// cfg.KeepRemoteFiles.
func Run(ctx context.Context, ui packersdk.Ui, comm packersdk.Communicator, cfg *Config, opts RunOptions) (*Result, error) {
	if cfg.OutputDirectory == "" || cfg.Decompress == nil {
		return nil, errors.New("nixos-sd: internal error: the configuration was not prepared before the build")
	}
	// Commands run concurrently; Packer's SSH communicator must open their
	// sessions one at a time.
	comm = remotecmd.Serialized(comm)
	r := &run{ui: ui, comm: comm, cfg: cfg, opts: opts, started: time.Now(), timer: timer{onStart: opts.Phase}}
	return r.run(ctx)
}

// run is one call of Run: what it was given, the phases' timings and the
// local files it wrote.
type run struct {
	ui      packersdk.Ui
	comm    packersdk.Communicator
	cfg     *Config
	opts    RunOptions
	started time.Time
	timer   timer

	createdOut bool
	partials   []string

	// nixpkgs is the nixpkgs the build used; builtSize the size of the file
	// the build made (the .img.zst when compressed).
	nixpkgs   Nixpkgs
	builtSize int64
	// link opens the download's connections of our own during the build.
	link *linkPlan
	// workDir is the private working directory the run created on the host.
	workDir string
	// cache is the binary cache's part of the run; nil without one.
	cache *cacheRun
	// log holds everything the host printed (output_directory/nixos-sd-build.log).
	log *buildLog
}

// run goes through the phases in order; each phase's file holds its code.
func (r *run) run(ctx context.Context) (res *Result, err error) {
	defer func() {
		if err != nil {
			r.removePartials()
			var pe *PhaseError
			if errors.As(err, &pe) && len(pe.Log) > 0 {
				pe.LogFile = r.log.Path()
			}
		}
	}()
	// The builder pins nixpkgs at preflight; the provisioner here.
	if err := r.cfg.PinNixpkgs(ctx, r.ui); err != nil {
		return nil, err
	}
	if err := r.prepareOutput(); err != nil {
		return nil, err
	}
	if r.log, err = openBuildLog(r.cfg.OutputDirectory); err != nil {
		return nil, err
	}
	defer r.log.close()
	r.ui.Say(fmt.Sprintf("Everything the build host prints goes to %s", r.log.Path()))
	if err := r.makeWorkDir(ctx); err != nil {
		return nil, phaseErr(PhaseUpload, err, nil)
	}
	defer r.cleanupRemote(ctx)

	if err := r.upload(ctx); err != nil {
		return nil, phaseErr(PhaseUpload, err, nil)
	}
	// The host is there: measure the link while the image builds.
	r.link = r.planLink(ctx)
	defer r.link.close()
	if err := r.ensureNix(ctx); err != nil {
		return nil, err
	}
	if err := r.lockFlake(ctx); err != nil {
		return nil, phaseErr(PhaseBuild, err, nil)
	}
	r.startCache(ctx)
	err = r.build(ctx)
	r.stopPull()
	if err != nil {
		return nil, err
	}
	r.nixpkgs = r.resolveNixpkgs(ctx)
	image, info, err := r.locate(ctx)
	if err != nil {
		return nil, phaseErr(PhaseLocate, err, nil)
	}
	r.builtSize = info.size
	names := r.localNames(image)
	dl, err := r.fetch(ctx, image, info, names)
	if err != nil {
		return nil, err
	}
	defer dl.stop()
	if err := r.verify(dl); err != nil {
		return nil, err
	}
	res = &Result{RemoteImage: image, Compressed: names.zst && !names.decompress, Nixpkgs: r.nixpkgs, BuildLog: r.log.Path()}
	if res.Size, res.SHA256, err = r.checkImage(dl, names, info); err != nil {
		return nil, err
	}
	if res.ImagePath, err = r.placeImage(names); err != nil {
		return nil, err
	}
	r.pushCache(ctx)
	if r.cache != nil {
		rep := r.cache.report
		res.Cache = &rep
	}
	res.Timings = r.timer.snapshot()
	res.Timings["total"] = time.Since(r.started)
	if res.Files, err = r.writeSidecars(res, names, dl.remoteSum); err != nil {
		return nil, err
	}
	r.ui.Say(fmt.Sprintf("Image ready: %s (%s, sha256 %s)", res.ImagePath, humanBytes(res.Size), res.SHA256))
	return res, nil
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
