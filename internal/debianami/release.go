// Package debianami finds the newest official Debian AMI for a release and an
// architecture. The data source and the builder's default source image both
// use it.
package debianami

import (
	"fmt"
	"strconv"
	"strings"
)

// DebianOwner is the AWS account Debian publishes its official AMIs from,
// in the aws partition.
const DebianOwner = "136693071363"

// OwnerIn is Debian's AMI account in a partition ("aws", "aws-cn",
// "aws-us-gov", ...). Only the aws partition's is known: Debian's cloud
// team documents (wiki.debian.org/Cloud/AmazonEC2Image) no account of the
// China or GovCloud partitions, which are separate AWS accounts systems.
func OwnerIn(partition string) (string, bool) {
	if partition == "aws" {
		return DebianOwner, true
	}
	return "", false
}

// NoOwnerError says that no Debian account is known in the region's
// partition and what to set instead.
func NoOwnerError(option, region, partition string) error {
	return fmt.Errorf("%s: required in region %s: it is in partition %s, where the plugin knows no account Debian publishes AMIs from (only %s in partition aws); set it to an arm64 Debian AMI of that region (or, for the data source, owners to the account that publishes the images you trust)", option, region, partition, DebianOwner)
}

// Release is a Debian release the plugin knows.
type Release struct {
	Number   int
	Codename string
}

// Releases lists the Debian releases with official arm64 AMIs, oldest first.
var Releases = []Release{
	{10, "buster"},
	{11, "bullseye"},
	{12, "bookworm"},
	{13, "trixie"},
	{14, "forky"},
}

// DefaultRelease is the newest stable Debian release the plugin knows.
var DefaultRelease = Release{13, "trixie"}

// Architectures the lookup accepts, as Debian names them in AMI names.
var Architectures = []string{"arm64", "amd64"}

// ParseRelease accepts a codename ("bookworm") or a number ("12"), in any
// case; empty means DefaultRelease.
func ParseRelease(s string) (Release, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return DefaultRelease, nil
	}
	n, numErr := strconv.Atoi(s)
	for _, r := range Releases {
		if (numErr == nil && r.Number == n) || r.Codename == s {
			return r, nil
		}
	}
	return Release{}, fmt.Errorf("unknown Debian release %q; use one of %s", s, validReleases())
}

// validReleases lists the known releases, oldest first, as `"bookworm" (12)`.
func validReleases() string {
	var names []string
	for _, r := range Releases {
		names = append(names, fmt.Sprintf("%q (%d)", r.Codename, r.Number))
	}
	return strings.Join(names, ", ")
}

// String is the release as messages show it, for example "13 (trixie)".
func (r Release) String() string {
	return fmt.Sprintf("%d (%s)", r.Number, r.Codename)
}

// NixBin is the version of Nix that the release's nix-bin package installs
// (what the builder gets on an official AMI), "" when the release has none.
func (r Release) NixBin() string {
	switch {
	case r.Number <= 11:
		return ""
	case r.Number == 12:
		return "2.8.0"
	default:
		return "2.26.3"
	}
}

// ParseArchitecture accepts "arm64" or "amd64" (and the EC2 spellings
// "aarch64"/"x86_64"); empty means arm64.
func ParseArchitecture(s string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "arm64", "aarch64":
		return "arm64", nil
	case "amd64", "x86_64":
		return "amd64", nil
	}
	return "", fmt.Errorf("unknown architecture %q; use \"arm64\" or \"amd64\"", s)
}

// EC2Architecture maps Debian's architecture name to EC2's.
func EC2Architecture(debianArch string) string {
	if debianArch == "amd64" {
		return "x86_64"
	}
	return "arm64"
}

// NamePattern is the DescribeImages name filter for a release and architecture,
// matching Debian's names such as debian-12-arm64-20250610-2137.
func NamePattern(r Release, arch string) string {
	return fmt.Sprintf("debian-%d-%s-*", r.Number, arch)
}
