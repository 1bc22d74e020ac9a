package payload

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

// makeWorkDir creates the run's private working directory on the host; the
// rest of the run uses it as cfg.RemoteDirectory.
func (r *run) makeWorkDir(ctx context.Context) error {
	out, err := remotecmd.Output(ctx, r.comm, workDirCommand(r.cfg))
	if err != nil {
		if r.cfg.RemoteDirectory != "" {
			return fmt.Errorf("creating remote_directory %s on the host: %w; it must not exist yet (the build works only in a directory it "+
				"creates itself, owned by the user and private): remove it, or leave remote_directory unset for a new one per build", r.cfg.RemoteDirectory, err)
		}
		return fmt.Errorf("creating a private working directory on the host with mktemp -d: %w", err)
	}
	dir := strings.TrimSpace(string(out))
	if !strings.HasPrefix(dir, "/") || strings.ContainsAny(dir, " '\"$`\\\n") {
		return fmt.Errorf("the host's mktemp -d answered %q, not a plain absolute path; set remote_directory", dir)
	}
	c := *r.cfg
	c.RemoteDirectory = dir
	r.cfg = &c
	r.workDir = dir
	return nil
}

// upload puts build.sh and the NixOS
// configuration (built-in, nixos_config or a local flake) in it.
func (r *run) upload(ctx context.Context) error {
	defer r.timer.track(PhaseUpload)()
	cfg := r.cfg
	rd := cfg.RemoteDirectory
	r.ui.Say(fmt.Sprintf("Uploading the build script and the %s configuration to %s", configSource(cfg), rd))
	if err := r.uploadEmbedded(ctx, remoteScript, path.Join(rd, remoteScript)); err != nil {
		return err
	}
	switch {
	case cfg.Flake != "":
		dir, local := LocalFlakeDir(cfg.Flake)
		if !local {
			return nil
		}
		return r.uploadDir(ctx, dir, path.Join(rd, remoteFlake))
	case cfg.NixOSConfig != "":
		dst := path.Join(rd, remoteConfig)
		if err := r.mkdir(ctx, dst); err != nil {
			return err
		}
		if err := r.uploadEmbedded(ctx, "entry.nix", path.Join(rd, remoteDefault)); err != nil {
			return err
		}
		if err := r.uploadBytes(ctx, "plugin.nix", []byte(pluginModuleFile(cfg)), path.Join(rd, remotePlugin)); err != nil {
			return err
		}
		if m := pluginModule(cfg); m != "" {
			r.ui.Say("Adding to nixos_config, as a module the manifest shows (plugin_module): " + moduleSummary(cfg))
		}
		st, err := os.Stat(cfg.NixOSConfig)
		if err != nil {
			return fmt.Errorf("nixos_config: %w", err)
		}
		if st.IsDir() {
			return r.uploadDir(ctx, cfg.NixOSConfig, dst)
		}
		return r.uploadFile(ctx, cfg.NixOSConfig, path.Join(dst, "configuration.nix"))
	default:
		if src := cfg.LocalSSHKeySources(); len(src) > 0 {
			r.ui.Say(fmt.Sprintf("ssh_authorized_keys is not set: the image lets in your own public keys, as root and nixos, so you can log in at first boot (use_local_ssh_keys = false leaves them out): %s", strings.Join(src, ", ")))
		} else if len(cfg.SSHAuthorizedKeys) == 0 {
			r.ui.Error("Warning: ssh_authorized_keys is empty, so nobody can log in to the built system over SSH; set ssh_authorized_keys to log in at first boot")
		}
		if err := r.mkdir(ctx, path.Join(rd, remoteNixOS)); err != nil {
			return err
		}
		if err := r.uploadEmbedded(ctx, "default.nix", path.Join(rd, remoteDefault)); err != nil {
			return err
		}
		js, err := settingsJSON(cfg)
		if err != nil {
			return err
		}
		return r.uploadBytes(ctx, "settings.json", js, path.Join(rd, remoteSettings))
	}
}

// mkdir creates the directory dir on the host.
func (r *run) mkdir(ctx context.Context, dir string) error {
	if _, err := remotecmd.Output(ctx, r.comm, mkdirCommand(dir)); err != nil {
		return fmt.Errorf("creating %s on the host: %w", dir, err)
	}
	return nil
}

// The communicator's uploads take no context: the helpers below check ctx
// before each one, so that a run whose ctx ended uploads nothing more.

// uploadEmbedded uploads the file name of hostfiles/ to dst.
func (r *run) uploadEmbedded(ctx context.Context, name, dst string) error {
	b, err := hostFiles.ReadFile("hostfiles/" + name)
	if err != nil {
		return err
	}
	return r.uploadBytes(ctx, name, b, dst)
}

// uploadBytes uploads b, known as name in errors, to dst.
func (r *run) uploadBytes(ctx context.Context, name string, b []byte, dst string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.comm.Upload(dst, bytes.NewReader(b), nil); err != nil {
		return fmt.Errorf("uploading %s to %s: %w", name, dst, err)
	}
	return nil
}

// uploadFile uploads the local file src to dst.
func (r *run) uploadFile(ctx context.Context, src, dst string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
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
func (r *run) uploadDir(ctx context.Context, src, dst string) error {
	if err := r.mkdir(ctx, dst); err != nil {
		return err
	}
	if err := r.comm.UploadDir(dst, strings.TrimRight(src, "/")+"/", nil); err != nil {
		return fmt.Errorf("uploading the directory %s to %s: %w", src, dst, err)
	}
	return nil
}

// stopGrace is how long cleanup on the host may take after ctx ended.
const stopGrace = time.Minute

// cleanupRemote removes the run's working directory.
func (r *run) cleanupRemote(ctx context.Context) {
	if r.workDir == "" {
		return
	}
	if r.cfg.KeepRemoteFiles {
		r.ui.Say(fmt.Sprintf("keep_remote_files: leaving %s on the host", r.cfg.RemoteDirectory))
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopGrace)
	defer cancel()
	if _, err := remotecmd.Output(ctx, r.comm, cleanupCommand(r.cfg)); err != nil {
		r.ui.Error(fmt.Sprintf("nixos-sd: could not remove %s on the host: %v", r.cfg.RemoteDirectory, err))
	}
}
