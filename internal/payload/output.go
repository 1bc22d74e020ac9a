package payload

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// prepareOutput creates the output directory (emptied first with -force).
func (r *run) prepareOutput() error {
	out := r.cfg.OutputDirectory
	if r.cfg.Force() {
		if err := os.RemoveAll(out); err != nil {
			return fmt.Errorf("nixos-sd: -force: removing the old output_directory %q: %w; remove it by hand or choose another output_directory", out, err)
		}
	}
	if _, err := os.Stat(out); errors.Is(err, os.ErrNotExist) {
		r.createdOut = true
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("nixos-sd: creating output_directory %q: %w; choose an output_directory you can write to", out, err)
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

// localNames are the local files of one image.
type localNames struct {
	// base is the built file's name, for example x.img.zst.
	base string
	// zst is true when the built file is compressed.
	zst bool
	// decompress is true when the local image is the decompressed .img.
	decompress bool
	// download is the partial file the download writes.
	download string
	// final is the local image's name, without directory.
	final string
	// finalTmp is the partial file that becomes final: the download itself,
	// or the decompressed image.
	finalTmp string
}

// localNames names the local files for the built file image: image_name, or
// the built file's own name (without .zst when decompressing).
func (r *run) localNames(image string) localNames {
	out := r.cfg.OutputDirectory
	n := localNames{base: path.Base(image)}
	n.zst = strings.HasSuffix(n.base, ".zst")
	n.decompress = n.zst && *r.cfg.Decompress
	n.download = filepath.Join(out, n.base+".partial")
	switch {
	case r.cfg.ImageName != "":
		n.final = r.cfg.ImageName
	case n.decompress:
		n.final = strings.TrimSuffix(n.base, ".zst")
	default:
		n.final = n.base
	}
	n.finalTmp = n.download
	if n.decompress {
		n.finalTmp = filepath.Join(out, n.final+".partial")
		if n.finalTmp == n.download {
			// image_name is the .zst's own name: keep the two files apart.
			n.finalTmp = filepath.Join(out, n.final+".decompressed.partial")
		}
	}
	return n
}

// placeImage gives the verified image its final name and returns its path.
func (r *run) placeImage(n localNames) (string, error) {
	p := filepath.Join(r.cfg.OutputDirectory, n.final)
	if err := os.Rename(n.finalTmp, p); err != nil {
		return "", phaseErr(PhaseDecompress, err, nil)
	}
	r.partials = append(r.partials, p)
	return p, nil
}

// writeFileAtomic writes data to name through a partial file, so that name
// is never seen half written.
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
