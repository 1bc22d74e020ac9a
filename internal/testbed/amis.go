package testbed

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// DebianOwner is the account Debian publishes its official AMIs from.
const DebianOwner = "136693071363"

// Owners of the catalogue's images that are not Debian's.
const (
	// ImpostorOwner publishes images named like Debian's (debian-13-arm64-...),
	// newer than Debian's own, that a lookup must never pick.
	ImpostorOwner = "679593333241"
	// AmazonOwner publishes Amazon Linux images (owner alias "amazon").
	AmazonOwner = "137112412989"
)

// CatalogueRegions are the regions the catalogue's images live in. Other
// regions have no images at all.
var CatalogueRegions = []string{"us-east-1", "us-east-2", "eu-west-1"}

// CatalogueImage is one AMI the test bed's moto serves, in one region.
type CatalogueImage struct {
	Region       string
	ID           string
	Name         string
	Description  string
	Architecture string // EC2 spelling: arm64 or x86_64
	Owner        string
	OwnerAlias   string // "amazon" for Amazon's images, else empty
	// Release is the Debian release number for Debian-named images, else 0.
	Release         int
	CreationDate    time.Time
	DeprecationTime *time.Time
	RootDeviceName  string
	BootMode        string
}

// DeprecatedAt says whether the image is deprecated at t (AWS: a deprecation
// time at or before t).
func (c CatalogueImage) DeprecatedAt(t time.Time) bool {
	return c.DeprecationTime != nil && !c.DeprecationTime.After(t)
}

// Deprecated says whether the image is deprecated now, as moto decides it.
// The catalogue's deprecation times are either before 2026-08 or a year or
// more after the day it is made (futureDeprecation), so the answer does not
// change with the day the tests run.
func (c CatalogueImage) Deprecated() bool { return c.DeprecatedAt(time.Now()) }

// catalogueEntry is one image name and where it is published.
type catalogueEntry struct {
	release int
	stamp   string // Debian's date-serial, e.g. 20250610-2137
	created string // RFC 3339 creation time
	// deprecated maps region -> deprecation time ("" = none); "*" applies to
	// all. "+Nd" is N days after the day the catalogue is made.
	deprecated map[string]string
	regions    []string // nil = all CatalogueRegions
}

// debianEntries shape the catalogue like Debian's real one: several images per
// release, older ones deprecated, a same-day tie, releases missing in a region.
var debianEntries = []catalogueEntry{
	// Debian 11: every image deprecated, so only IncludeDeprecated finds one.
	{release: 11, stamp: "20240702-1796", created: "2024-07-02T07:12:00Z", deprecated: map[string]string{"*": "2026-07-02T07:12:00Z"}},
	{release: 11, stamp: "20250210-2016", created: "2025-02-10T10:05:00Z", deprecated: map[string]string{"*": "2026-02-10T10:05:00Z"}},
	// Debian 12: the oldest deprecated, the middle one with a future deprecation
	// time, the newest current except in eu-west-1 where it was deprecated.
	{release: 12, stamp: "20250316-2053", created: "2025-03-16T20:53:00Z", deprecated: map[string]string{"*": "2025-09-16T20:53:00Z"}},
	{release: 12, stamp: "20250428-2096", created: "2025-04-28T09:30:00Z", deprecated: map[string]string{"*": "+365d"}},
	{release: 12, stamp: "20250610-2137", created: "2025-06-10T21:37:00Z", deprecated: map[string]string{"eu-west-1": "2025-06-20T00:00:00Z", "*": "+400d"}},
	// Debian 13: the two newest images share their creation time to the second
	// (a same-day tie; the higher serial is the newer build).
	{release: 13, stamp: "20250814-2204", created: "2025-08-14T22:04:00Z"},
	{release: 13, stamp: "20251006-2257", created: "2025-10-06T22:57:00Z", deprecated: map[string]string{"*": "2026-04-06T22:57:00Z"}},
	{release: 13, stamp: "20251117-2298", created: "2025-11-17T22:00:00Z"},
	{release: 13, stamp: "20251117-2299", created: "2025-11-17T22:00:00Z"},
	// Debian 14: only in us-east-1 and eu-west-1 (none in us-east-2).
	{release: 14, stamp: "20251201-2320", created: "2025-12-01T23:20:00Z", regions: []string{"us-east-1", "eu-west-1"}},
}

var otherEntries = []struct {
	owner, alias, name, arch, created string
}{
	// Named exactly like Debian's images, newer, from another account.
	{ImpostorOwner, "", "debian-13-arm64-20251224-9999", "arm64", "2025-12-24T00:00:00Z"},
	{ImpostorOwner, "", "debian-12-arm64-20251224-9999", "arm64", "2025-12-24T00:00:00Z"},
	{ImpostorOwner, "", "debian-13-amd64-20251224-9999", "x86_64", "2025-12-24T00:00:00Z"},
	{AmazonOwner, "amazon", "al2023-ami-2023.9.20251110.0-kernel-6.1-arm64", "arm64", "2025-11-10T18:00:00Z"},
	{AmazonOwner, "amazon", "al2023-ami-2023.9.20251110.0-kernel-6.1-x86_64", "x86_64", "2025-11-10T18:00:00Z"},
}

// deprecationTime reads a catalogue deprecation time: RFC 3339, or "+Nd",
// N days after the start of today (UTC).
func deprecationTime(s string) time.Time {
	if days, ok := strings.CutPrefix(s, "+"); ok {
		n, err := strconv.Atoi(strings.TrimSuffix(days, "d"))
		if err != nil {
			panic(fmt.Sprintf("testbed: catalogue deprecation %q: %v", s, err))
		}
		return time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, n)
	}
	return mustTime(s)
}

// Catalogue returns every image the test bed's moto serves, per region, sorted
// by region then name. Tests compute expected lookups from it independently of
// the code under test.
func Catalogue() []CatalogueImage {
	var out []CatalogueImage
	for _, e := range debianEntries {
		regions := e.regions
		if regions == nil {
			regions = CatalogueRegions
		}
		for _, region := range regions {
			for _, arch := range []string{"arm64", "amd64"} {
				name := fmt.Sprintf("debian-%d-%s-%s", e.release, arch, e.stamp)
				img := CatalogueImage{
					Region:         region,
					ID:             amiID(region, DebianOwner, name),
					Name:           name,
					Description:    fmt.Sprintf("Debian %d (%s)", e.release, e.stamp),
					Architecture:   map[string]string{"arm64": "arm64", "amd64": "x86_64"}[arch],
					Owner:          DebianOwner,
					Release:        e.release,
					CreationDate:   mustTime(e.created),
					RootDeviceName: "/dev/xvda",
					BootMode:       map[string]string{"arm64": "uefi", "amd64": "uefi-preferred"}[arch],
				}
				dep, ok := e.deprecated[region]
				if !ok {
					dep = e.deprecated["*"]
				}
				if dep != "" {
					t := deprecationTime(dep)
					img.DeprecationTime = &t
				}
				out = append(out, img)
			}
		}
	}
	for _, o := range otherEntries {
		for _, region := range CatalogueRegions {
			var release int
			if _, err := fmt.Sscanf(o.name, "debian-%d-", &release); err != nil {
				release = 0
			}
			out = append(out, CatalogueImage{
				Region:         region,
				ID:             amiID(region, o.owner, o.name),
				Name:           o.name,
				Description:    o.name,
				Architecture:   o.arch,
				Owner:          o.owner,
				OwnerAlias:     o.alias,
				Release:        release,
				CreationDate:   mustTime(o.created),
				RootDeviceName: "/dev/xvda",
				BootMode:       "uefi",
			})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Region != out[j].Region {
			return out[i].Region < out[j].Region
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// amiID is a fixed, region-specific id like AWS's (ami- and 17 hex digits).
func amiID(region, owner, name string) string {
	sum := sha256.Sum256([]byte(region + "/" + owner + "/" + name))
	return "ami-" + hex.EncodeToString(sum[:])[:17]
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic("testbed: bad catalogue time " + s) // static data; caught by the unit test
	}
	return t.UTC()
}

// motoAMI is one entry of MOTO_AMIS_PATH: moto's Ami constructor keywords,
// plus "regions" and "deprecation_time", which moto_launcher.py handles.
type motoAMI struct {
	AMIID              string            `json:"ami_id"`
	Name               string            `json:"name"`
	Description        string            `json:"description"`
	OwnerID            string            `json:"owner_id"`
	OwnerAlias         string            `json:"owner_alias,omitempty"`
	Public             bool              `json:"public"`
	VirtualizationType string            `json:"virtualization_type"`
	Architecture       string            `json:"architecture"`
	State              string            `json:"state"`
	ImageType          string            `json:"image_type"`
	Hypervisor         string            `json:"hypervisor"`
	RootDeviceName     string            `json:"root_device_name"`
	RootDeviceType     string            `json:"root_device_type"`
	Sriov              string            `json:"sriov"`
	CreationDate       string            `json:"creation_date"`
	BootMode           string            `json:"boot_mode"`
	DeprecationTime    string            `json:"deprecation_time,omitempty"`
	Regions            []string          `json:"regions"`
	Tags               map[string]string `json:"tags"`
}

const awsTime = "2006-01-02T15:04:05.000Z"

// writeCatalogue writes the catalogue as MOTO_AMIS_PATH JSON.
func writeCatalogue(path string) error {
	var amis []motoAMI
	for _, c := range Catalogue() {
		m := motoAMI{
			AMIID: c.ID, Name: c.Name, Description: c.Description, OwnerID: c.Owner, OwnerAlias: c.OwnerAlias,
			Public: true, VirtualizationType: "hvm", Architecture: c.Architecture, State: "available",
			ImageType: "machine", Hypervisor: "xen", RootDeviceName: c.RootDeviceName, RootDeviceType: "ebs",
			Sriov: "simple", CreationDate: c.CreationDate.UTC().Format(awsTime), BootMode: c.BootMode,
			Regions: []string{c.Region}, Tags: map[string]string{},
		}
		if c.DeprecationTime != nil {
			m.DeprecationTime = c.DeprecationTime.UTC().Format(awsTime)
		}
		amis = append(amis, m)
	}
	data, err := json.MarshalIndent(amis, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
