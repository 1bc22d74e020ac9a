package builder

import (
	"errors"
	"fmt"
	"os"
)

// Artifact is the downloaded, verified SD image with its checksum and
// manifest files.
type Artifact struct {
	// ImagePath is the local image file.
	ImagePath string
	// SHA256 is the image's hex SHA-256.
	SHA256 string
	// Paths are every file the build wrote: the image, <image>.sha256 and
	// <image>.json.
	Paths []string
	// Generated is the build's generated data (the build.<Key> values).
	Generated map[string]interface{}
}

// BuilderId identifies the nixos-sd builder.
func (a *Artifact) BuilderId() string { return BuilderID }

// Files are the image, its .sha256 and its manifest.
func (a *Artifact) Files() []string { return append([]string(nil), a.Paths...) }

// Id is the image path.
func (a *Artifact) Id() string { return a.ImagePath }

func (a *Artifact) String() string {
	return fmt.Sprintf("NixOS SD image: %s (sha256 %s)", a.ImagePath, a.SHA256)
}

// State answers "generated_data" with the build's generated data.
func (a *Artifact) State(name string) interface{} {
	if name == "generated_data" {
		return a.Generated
	}
	return nil
}

// Destroy removes the artifact's files.
func (a *Artifact) Destroy() error {
	var errs []error
	for _, f := range a.Paths {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
