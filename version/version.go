// Package version holds the plugin's version, set at release time by goreleaser.
package version

import "github.com/hashicorp/packer-plugin-sdk/version"

var (
	// Version is the main version number that is being run at the moment.
	Version = "0.1.0"
	// VersionPrerelease is a pre-release marker for the version. If this is ""
	// (empty string) then it means that it is a final release.
	VersionPrerelease = ""
	// VersionMetadata is optional build metadata.
	VersionMetadata = ""
	// PluginVersion is used by the plugin set to report its version.
	PluginVersion = version.NewPluginVersion(Version, VersionPrerelease, VersionMetadata)
)
