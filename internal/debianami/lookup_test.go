package debianami

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
)

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

const other = "111122223333"

// img builds an image as EC2 describes an official Debian one.
func img(id, name, created string, opts ...func(*types.Image)) types.Image {
	arch := types.ArchitectureValuesArm64
	if strings.Contains(name, "-amd64-") {
		arch = types.ArchitectureValuesX8664
	}
	i := types.Image{
		ImageId:        aws.String(id),
		Name:           aws.String(name),
		CreationDate:   aws.String(created),
		OwnerId:        aws.String(DebianOwner),
		Architecture:   arch,
		State:          types.ImageStateAvailable,
		ImageType:      types.ImageTypeValuesMachine,
		Description:    aws.String("Debian " + name),
		RootDeviceName: aws.String("/dev/xvda"),
		BootMode:       types.BootModeValuesUefi,
	}
	for _, o := range opts {
		o(&i)
	}
	return i
}

func owner(o string) func(*types.Image) { return func(i *types.Image) { i.OwnerId = aws.String(o) } }
func deprecated(t string) func(*types.Image) {
	return func(i *types.Image) { i.DeprecationTime = aws.String(t) }
}
func arch(a types.ArchitectureValues) func(*types.Image) {
	return func(i *types.Image) { i.Architecture = a }
}

var trixieArm = Query{Release: Release{13, "trixie"}, Architecture: "arm64", Region: "us-east-2"}

func TestChoose(t *testing.T) {
	withDeprecated := trixieArm
	withDeprecated.IncludeDeprecated = true
	bookwormAmd := Query{Release: Release{12, "bookworm"}, Architecture: "amd64", Region: "eu-west-1"}
	twoOwners := trixieArm
	twoOwners.Owners = []string{DebianOwner, other}

	for _, tc := range []struct {
		name   string
		q      Query
		images []types.Image
		want   string // image id
	}{
		{
			name: "newest creation date wins",
			q:    trixieArm,
			images: []types.Image{
				img("ami-old", "debian-13-arm64-20250801-2200", "2025-08-01T10:00:00.000Z"),
				img("ami-new", "debian-13-arm64-20251117-2299", "2025-11-17T10:00:00.000Z"),
				img("ami-mid", "debian-13-arm64-20251001-2250", "2025-10-01T10:00:00.000Z"),
			},
			want: "ami-new",
		},
		{
			name: "creation date beats name order",
			q:    trixieArm,
			images: []types.Image{
				img("ami-a", "debian-13-arm64-20251201-2300", "2025-11-01T10:00:00.000Z"),
				img("ami-b", "debian-13-arm64-20251101-2290", "2025-11-02T10:00:00.000Z"),
			},
			want: "ami-b",
		},
		{
			name: "same creation date: higher build number wins, numerically",
			q:    trixieArm,
			images: []types.Image{
				img("ami-999", "debian-13-arm64-20251117-999", "2025-11-17T10:00:00.000Z"),
				img("ami-1000", "debian-13-arm64-20251117-1000", "2025-11-17T10:00:00.000Z"),
				img("ami-998", "debian-13-arm64-20251117-998", "2025-11-17T10:00:00.000Z"),
			},
			want: "ami-1000",
		},
		{
			name: "same creation date in different notations is a tie",
			q:    trixieArm,
			images: []types.Image{
				img("ami-2", "debian-13-arm64-20251117-2", "2025-11-17T10:00:00Z"),
				img("ami-3", "debian-13-arm64-20251117-3", "2025-11-17T12:00:00.000+02:00"),
			},
			want: "ami-3",
		},
		{
			name: "deprecated images are dropped",
			q:    trixieArm,
			images: []types.Image{
				img("ami-dep", "debian-13-arm64-20251117-2299", "2025-11-17T10:00:00.000Z", deprecated("2026-11-01T00:00:00.000Z")),
				img("ami-ok", "debian-13-arm64-20251001-2250", "2025-10-01T10:00:00.000Z", deprecated("2027-10-01T00:00:00.000Z")),
			},
			want: "ami-ok",
		},
		{
			name: "deprecation exactly now counts as deprecated",
			q:    trixieArm,
			images: []types.Image{
				img("ami-dep", "debian-13-arm64-20251117-2299", "2025-11-17T10:00:00.000Z", deprecated(now.Format(time.RFC3339))),
				img("ami-ok", "debian-13-arm64-20251001-2250", "2025-10-01T10:00:00.000Z"),
			},
			want: "ami-ok",
		},
		{
			name: "deprecated images count with include_deprecated",
			q:    withDeprecated,
			images: []types.Image{
				img("ami-dep", "debian-13-arm64-20251117-2299", "2025-11-17T10:00:00.000Z", deprecated("2026-11-01T00:00:00.000Z")),
				img("ami-ok", "debian-13-arm64-20251001-2250", "2025-10-01T10:00:00.000Z"),
			},
			want: "ami-dep",
		},
		{
			name: "an unrelated owner's newer image never wins",
			q:    trixieArm,
			images: []types.Image{
				img("ami-evil", "debian-13-arm64-20261117-9999", "2026-11-17T10:00:00.000Z", owner(other)),
				img("ami-deb", "debian-13-arm64-20251117-2299", "2025-11-17T10:00:00.000Z"),
			},
			want: "ami-deb",
		},
		{
			name: "an image with no owner is not trusted",
			q:    trixieArm,
			images: []types.Image{
				img("ami-anon", "debian-13-arm64-20261117-9999", "2026-11-17T10:00:00.000Z", func(i *types.Image) { i.OwnerId = nil }),
				img("ami-deb", "debian-13-arm64-20251117-2299", "2025-11-17T10:00:00.000Z"),
			},
			want: "ami-deb",
		},
		{
			name: "several owners: newest among them",
			q:    twoOwners,
			images: []types.Image{
				img("ami-other", "debian-13-arm64-20261117-1", "2026-11-17T10:00:00.000Z", owner(other)),
				img("ami-deb", "debian-13-arm64-20251117-2299", "2025-11-17T10:00:00.000Z"),
				img("ami-third", "debian-13-arm64-20271117-1", "2027-11-17T10:00:00.000Z", owner("444455556666")),
			},
			want: "ami-other",
		},
		{
			name: "mixed architectures: the arm64 name must be an arm64 image",
			q:    trixieArm,
			images: []types.Image{
				img("ami-x86", "debian-13-arm64-20261117-9999", "2026-11-17T10:00:00.000Z", arch(types.ArchitectureValuesX8664)),
				img("ami-amd", "debian-13-amd64-20261117-9999", "2026-11-17T10:00:00.000Z"),
				img("ami-arm", "debian-13-arm64-20251117-2299", "2025-11-17T10:00:00.000Z"),
			},
			want: "ami-arm",
		},
		{
			name: "amd64 asks for x86_64 images",
			q:    bookwormAmd,
			images: []types.Image{
				img("ami-arm", "debian-12-arm64-20261117-9999", "2026-11-17T10:00:00.000Z"),
				img("ami-amd", "debian-12-amd64-20250610-2137", "2025-06-10T21:37:00.000Z"),
				img("ami-amd-arm", "debian-12-amd64-20260610-2137", "2026-06-10T21:37:00.000Z", arch(types.ArchitectureValuesArm64)),
			},
			want: "ami-amd",
		},
		{
			name: "wrong name shapes never match",
			q:    trixieArm,
			images: []types.Image{
				img("ami-daily", "debian-13-arm64-daily-20261117-3000", "2026-11-17T10:00:00.000Z"),
				img("ami-backports", "debian-13-backports-arm64-20261117-3000", "2026-11-17T10:00:00.000Z"),
				img("ami-bp2", "debian-13-arm64-backports-20261117-3000", "2026-11-17T10:00:00.000Z"),
				img("ami-suffix", "debian-13-arm64-20261117-3000-custom", "2026-11-17T10:00:00.000Z"),
				img("ami-prefix", "my-debian-13-arm64-20261117-3000", "2026-11-17T10:00:00.000Z"),
				img("ami-130", "debian-130-arm64-20261117-3000", "2026-11-17T10:00:00.000Z"),
				img("ami-12", "debian-12-arm64-20261117-3000", "2026-11-17T10:00:00.000Z"),
				img("ami-shortdate", "debian-13-arm64-2026111-3000", "2026-11-17T10:00:00.000Z"),
				img("ami-baddate", "debian-13-arm64-20261399-3000", "2026-11-17T10:00:00.000Z"),
				img("ami-nobuild", "debian-13-arm64-20261117", "2026-11-17T10:00:00.000Z"),
				img("ami-upper", "Debian-13-arm64-20261117-3000", "2026-11-17T10:00:00.000Z"),
				img("ami-good", "debian-13-arm64-20251117-2299", "2025-11-17T10:00:00.000Z"),
			},
			want: "ami-good",
		},
		{
			name: "images that are not available machine images are dropped",
			q:    trixieArm,
			images: []types.Image{
				img("ami-pending", "debian-13-arm64-20261117-3000", "2026-11-17T10:00:00.000Z", func(i *types.Image) { i.State = types.ImageStatePending }),
				img("ami-kernel", "debian-13-arm64-20261118-3000", "2026-11-18T10:00:00.000Z", func(i *types.Image) { i.ImageType = types.ImageTypeValuesKernel }),
				img("ami-good", "debian-13-arm64-20251117-2299", "2025-11-17T10:00:00.000Z"),
			},
			want: "ami-good",
		},
		{
			name: "an unreadable creation date falls back to the name's date",
			q:    trixieArm,
			images: []types.Image{
				img("ami-nodate", "debian-13-arm64-20251201-2300", "yesterday"),
				img("ami-dated", "debian-13-arm64-20251117-2299", "2025-11-17T10:00:00.000Z"),
			},
			want: "ami-nodate",
		},
		{
			name: "the zero query means trixie arm64 from Debian",
			q:    Query{},
			images: []types.Image{
				img("ami-12", "debian-12-arm64-20261117-3000", "2026-11-17T10:00:00.000Z"),
				img("ami-13", "debian-13-arm64-20251117-2299", "2025-11-17T10:00:00.000Z"),
			},
			want: "ami-13",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Choose(tc.images, tc.q, now)
			if err != nil {
				t.Fatalf("Choose: %v", err)
			}
			if got.ID != tc.want {
				t.Errorf("Choose picked %s (%s), want %s", got.ID, got.Name, tc.want)
			}
			// The order EC2 returns images in must not matter.
			rev := make([]types.Image, len(tc.images))
			for i, im := range tc.images {
				rev[len(rev)-1-i] = im
			}
			got2, err := Choose(rev, tc.q, now)
			if err != nil || got2.ID != tc.want {
				t.Errorf("Choose on reversed input picked %v (%v), want %s", got2, err, tc.want)
			}
		})
	}
}

func TestChooseFillsImage(t *testing.T) {
	images := []types.Image{img("ami-0123", "debian-13-arm64-20251117-2299", "2025-11-17T10:05:06.000Z", deprecated("2027-11-17T10:05:06.000Z"))}
	got, err := Choose(images, trixieArm, now)
	if err != nil {
		t.Fatal(err)
	}
	dep := time.Date(2027, 11, 17, 10, 5, 6, 0, time.UTC)
	want := &Image{
		ID:              "ami-0123",
		Name:            "debian-13-arm64-20251117-2299",
		Description:     "Debian debian-13-arm64-20251117-2299",
		Architecture:    "arm64",
		Owner:           DebianOwner,
		RootDeviceName:  "/dev/xvda",
		BootMode:        "uefi",
		CreationDate:    time.Date(2025, 11, 17, 10, 5, 6, 0, time.UTC),
		DeprecationTime: &dep,
		Release:         Release{13, "trixie"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Choose = %+v\nwant %+v", got, want)
	}

	images[0].DeprecationTime = nil
	got, err = Choose(images, trixieArm, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.DeprecationTime != nil {
		t.Errorf("DeprecationTime = %v, want nil when EC2 reports none", got.DeprecationTime)
	}
}

func TestChooseNoMatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		q      Query
		images []types.Image
		want   []string
	}{
		{
			name: "empty result",
			q:    Query{Release: Release{13, "trixie"}, Architecture: "arm64", Region: "us-east-2", Filters: map[string]string{"virtualization-type": "hvm"}},
			want: []string{
				"no Debian 13 (trixie) arm64 AMI owned by 136693071363 in region us-east-2 matches",
				"name=debian-13-arm64-*", "architecture=arm64", "state=available", "virtualization-type=hvm",
				"EC2 returned no images",
				"check the region", "include_deprecated = true", "widen owners/filters",
			},
		},
		{
			name: "only deprecated images",
			q:    trixieArm,
			images: []types.Image{
				img("ami-dep", "debian-13-arm64-20251117-2299", "2025-11-17T10:00:00.000Z", deprecated("2026-01-01T00:00:00Z")),
			},
			want: []string{"1 deprecated", "set include_deprecated = true to accept a deprecated image"},
		},
		{
			name: "only other owners, other names and architectures",
			q:    Query{Release: Release{12, "bookworm"}, Architecture: "amd64", Region: "eu-west-1"},
			images: []types.Image{
				img("ami-evil", "debian-12-amd64-20251117-2299", "2025-11-17T10:00:00.000Z", owner(other)),
				img("ami-daily", "debian-12-amd64-daily-20251117-2299", "2025-11-17T10:00:00.000Z"),
				img("ami-arm", "debian-12-amd64-20251117-2299", "2025-11-17T10:00:00.000Z", arch(types.ArchitectureValuesArm64)),
			},
			want: []string{
				"no Debian 12 (bookworm) amd64 AMI owned by 136693071363 in region eu-west-1",
				"architecture=x86_64",
				"EC2 returned 3 image(s)", "1 owned by another account",
				"1 not named debian-12-amd64-<YYYYMMDD>-<build>", "1 of another architecture",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Choose(tc.images, tc.q, now)
			if err == nil {
				t.Fatalf("Choose picked %s; want an error", got.ID)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message lacks %q:\n%s", w, err)
				}
			}
		})
	}
}

func TestChooseRejectsBadQuery(t *testing.T) {
	for _, tc := range []struct {
		q    Query
		want string
	}{
		{Query{Release: Release{9, "stretch"}}, "unknown Debian release 9"},
		{Query{Release: Release{13, "bookworm"}}, "unknown Debian release 13"},
		{Query{Architecture: "i386"}, `unknown architecture "i386"`},
		{Query{Owners: []string{"debian"}}, `owners: "debian" is not an AWS account id`},
		{Query{Owners: []string{"13669307136"}}, `owners: "13669307136" is not an AWS account id`},
	} {
		_, err := Choose(nil, tc.q, now)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Choose(%+v): error %v, want one containing %q", tc.q, err, tc.want)
		}
	}
}

func TestOwnerAliases(t *testing.T) {
	amazon := img("ami-amzn", "debian-13-arm64-20251117-2299", "2025-11-17T10:00:00.000Z",
		owner("137112412989"), func(i *types.Image) { i.ImageOwnerAlias = aws.String("amazon") })
	q := trixieArm
	q.Owners = []string{"amazon"}
	if got, err := Choose([]types.Image{amazon}, q, now); err != nil || got.ID != "ami-amzn" {
		t.Errorf("owner alias amazon: %v %v", got, err)
	}
	plain := img("ami-plain", "debian-13-arm64-20261117-2299", "2026-11-17T10:00:00.000Z", owner("137112412989"))
	if got, err := Choose([]types.Image{plain, amazon}, q, now); err != nil || got.ID != "ami-amzn" {
		t.Errorf("an image without the alias must not pass as amazon's: %v %v", got, err)
	}
	// "self" is the caller's own account: EC2 returns only those images.
	q.Owners = []string{"self"}
	if got, err := Choose([]types.Image{plain}, q, now); err != nil || got.ID != "ami-plain" {
		t.Errorf("owner self: %v %v", got, err)
	}
}

// fakeEC2 answers DescribeImages from pages; any other call panics through
// the nil embedded interface.
type fakeEC2 struct {
	awscommon.EC2API
	pages [][]types.Image
	err   error
	loop  bool // keep returning the same token
	calls []*ec2.DescribeImagesInput
}

func (f *fakeEC2) DescribeImages(ctx context.Context, in *ec2.DescribeImagesInput, _ ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	cp := *in
	f.calls = append(f.calls, &cp)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if f.err != nil {
		return nil, f.err
	}
	if f.loop {
		return &ec2.DescribeImagesOutput{NextToken: aws.String("same")}, nil
	}
	page := 0
	if in.NextToken != nil {
		if _, err := fmt.Sscanf(*in.NextToken, "page-%d", &page); err != nil {
			return nil, fmt.Errorf("bad token %q", *in.NextToken)
		}
	}
	out := &ec2.DescribeImagesOutput{Images: f.pages[page]}
	if page+1 < len(f.pages) {
		out.NextToken = aws.String(fmt.Sprintf("page-%d", page+1))
	}
	return out, nil
}

func filterMap(t *testing.T, fs []types.Filter) map[string][]string {
	t.Helper()
	m := map[string][]string{}
	for _, f := range fs {
		name := aws.ToString(f.Name)
		if _, dup := m[name]; dup {
			t.Errorf("filter %s given twice", name)
		}
		m[name] = f.Values
	}
	return m
}

func TestLookupRequest(t *testing.T) {
	f := &fakeEC2{pages: [][]types.Image{{img("ami-1", "debian-12-amd64-20250610-2137", "2025-06-10T21:37:00.000Z")}}}
	q := Query{
		Release:      Release{12, "bookworm"},
		Architecture: "x86_64",
		Region:       "eu-west-1",
		Filters:      map[string]string{"virtualization-type": "hvm", "description": "Debian 12, with commas"},
	}
	got, err := Lookup(context.Background(), f, q)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "ami-1" || got.Release.Codename != "bookworm" || got.Architecture != "x86_64" {
		t.Errorf("Lookup = %+v", got)
	}
	if len(f.calls) != 1 {
		t.Fatalf("%d DescribeImages calls, want 1", len(f.calls))
	}
	in := f.calls[0]
	if !reflect.DeepEqual(in.Owners, []string{DebianOwner}) {
		t.Errorf("Owners = %v, want Debian's account by default", in.Owners)
	}
	if in.IncludeDeprecated == nil || !*in.IncludeDeprecated {
		t.Errorf("IncludeDeprecated = %v, want true in every call", in.IncludeDeprecated)
	}
	if in.NextToken != nil {
		t.Errorf("first call has NextToken %q", *in.NextToken)
	}
	wantFilters := map[string][]string{
		"name":                {"debian-12-amd64-*"},
		"architecture":        {"x86_64"},
		"state":               {"available"},
		"image-type":          {"machine"},
		"virtualization-type": {"hvm"},
		"description":         {"Debian 12, with commas"},
	}
	if fm := filterMap(t, in.Filters); !reflect.DeepEqual(fm, wantFilters) {
		t.Errorf("filters = %v\nwant %v", fm, wantFilters)
	}
}

func TestLookupUserFilterNarrowsDefault(t *testing.T) {
	// A user "name" filter replaces the default pattern in the request (one
	// filter per name), but the choice still enforces the release's shape.
	f := &fakeEC2{pages: [][]types.Image{{
		img("ami-12", "debian-12-arm64-20251117-2299", "2026-11-17T10:00:00.000Z"),
		img("ami-13", "debian-13-arm64-20250814-2204", "2025-08-14T10:00:00.000Z"),
	}}}
	q := trixieArm
	q.Filters = map[string]string{"name": "debian-1*-arm64-2025*", "owner-alias": "x"}
	got, err := Lookup(context.Background(), f, q)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "ami-13" {
		t.Errorf("picked %s, want ami-13: a user filter must not let another release win", got.ID)
	}
	want := map[string][]string{
		"name":         {"debian-1*-arm64-2025*"},
		"architecture": {"arm64"},
		"state":        {"available"},
		"image-type":   {"machine"},
		"owner-alias":  {"x"},
	}
	if fm := filterMap(t, f.calls[0].Filters); !reflect.DeepEqual(fm, want) {
		t.Errorf("filters = %v\nwant %v", fm, want)
	}
	if n := aws.ToString(f.calls[0].Filters[0].Name); n != "name" {
		t.Errorf("first filter is %s; the defaults come first", n)
	}

	f.pages = [][]types.Image{{}}
	_, err = Lookup(context.Background(), f, q)
	if err == nil || !strings.Contains(err.Error(), "(filters: name=debian-1*-arm64-2025*, architecture=arm64, state=available, image-type=machine, owner-alias=x)") {
		t.Errorf("the no-match message must show the filters as sent: %v", err)
	}
}

func TestLookupOwnersAndDeprecatedChoice(t *testing.T) {
	f := &fakeEC2{pages: [][]types.Image{{
		img("ami-dep", "debian-13-arm64-20261117-3000", "2026-11-17T10:00:00.000Z", deprecated("2026-11-20T00:00:00Z")),
		img("ami-ok", "debian-13-arm64-20251117-2299", "2025-11-17T10:00:00.000Z"),
		img("ami-mine", "debian-13-arm64-20251118-1", "2025-11-18T10:00:00.000Z", owner(other)),
	}}}
	q := trixieArm
	q.Owners = []string{other, DebianOwner}
	got, err := Lookup(context.Background(), f, q)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "ami-mine" {
		t.Errorf("picked %s, want ami-mine (the newest non-deprecated of both owners)", got.ID)
	}
	if !reflect.DeepEqual(f.calls[0].Owners, []string{other, DebianOwner}) {
		t.Errorf("Owners = %v", f.calls[0].Owners)
	}
	// The caller's slice is not shared with the request.
	f.calls[0].Owners[0] = "changed"
	if q.Owners[0] != other {
		t.Error("the request aliases the query's Owners")
	}

	q.IncludeDeprecated = true
	f.calls = nil
	got, err = Lookup(context.Background(), f, q)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "ami-dep" || got.DeprecationTime == nil {
		t.Errorf("with include_deprecated picked %+v, want ami-dep", got)
	}
	if !*f.calls[0].IncludeDeprecated {
		t.Error("IncludeDeprecated not sent")
	}
}

func TestLookupPaginates(t *testing.T) {
	f := &fakeEC2{pages: [][]types.Image{
		{img("ami-1", "debian-13-arm64-20250801-2200", "2025-08-01T10:00:00.000Z")},
		{},
		{img("ami-3", "debian-13-arm64-20251117-2299", "2025-11-17T10:00:00.000Z")},
		{img("ami-2", "debian-13-arm64-20251001-2250", "2025-10-01T10:00:00.000Z")},
	}}
	got, err := Lookup(context.Background(), f, trixieArm)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "ami-3" {
		t.Errorf("picked %s, want ami-3 from the third page", got.ID)
	}
	if len(f.calls) != 4 {
		t.Fatalf("%d calls, want 4", len(f.calls))
	}
	for i, c := range f.calls {
		want := ""
		if i > 0 {
			want = fmt.Sprintf("page-%d", i)
		}
		if aws.ToString(c.NextToken) != want {
			t.Errorf("call %d NextToken = %q, want %q", i, aws.ToString(c.NextToken), want)
		}
		if len(c.Filters) != 4 || !*c.IncludeDeprecated {
			t.Errorf("call %d lost the filters or IncludeDeprecated: %+v", i, c)
		}
	}
}

func TestLookupStopsOnRepeatedToken(t *testing.T) {
	f := &fakeEC2{loop: true}
	_, err := Lookup(context.Background(), f, trixieArm)
	if err == nil || !strings.Contains(err.Error(), `page token "same" twice`) {
		t.Fatalf("err = %v", err)
	}
	if len(f.calls) != 2 {
		t.Errorf("%d calls, want 2", len(f.calls))
	}
}

func TestLookupNoMatchNamesRegion(t *testing.T) {
	f := &fakeEC2{pages: [][]types.Image{{}}}
	_, err := Lookup(context.Background(), f, trixieArm)
	want := "no Debian 13 (trixie) arm64 AMI owned by 136693071363 in region us-east-2 matches"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

func TestLookupAWSErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want []string
	}{
		{
			name: "auth failure",
			err:  &smithy.GenericAPIError{Code: "AuthFailure", Message: "AWS was not able to validate the provided access credentials"},
			want: []string{"DescribeImages in us-east-2 failed: AuthFailure: AWS was not able to validate the provided access credentials", "check your credentials"},
		},
		{
			name: "wrapped like the SDK does",
			err: &smithy.OperationError{ServiceID: "EC2", OperationName: "DescribeImages",
				Err: fmt.Errorf("https response error StatusCode: 403: %w", &smithy.GenericAPIError{Code: "UnauthorizedOperation", Message: "You are not authorized to perform this operation."})},
			want: []string{"DescribeImages in us-east-2 failed: UnauthorizedOperation: You are not authorized to perform this operation.", "allow ec2:DescribeImages"},
		},
		{
			name: "throttled",
			err:  &smithy.GenericAPIError{Code: "RequestLimitExceeded", Message: "Request limit exceeded."},
			want: []string{"RequestLimitExceeded: Request limit exceeded.", "max_retries"},
		},
		{
			name: "bad filter",
			err:  &smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "The filter 'bogus' is invalid"},
			want: []string{"InvalidParameterValue: The filter 'bogus' is invalid", "owners and filters"},
		},
		{
			name: "network",
			err:  errors.New("dial tcp 127.0.0.1:1: connect: connection refused"),
			want: []string{"DescribeImages in us-east-2 failed: dial tcp 127.0.0.1:1: connect: connection refused", "ec2_endpoint"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Lookup(context.Background(), &fakeEC2{err: tc.err}, trixieArm)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message lacks %q:\n%s", w, err)
				}
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("the AWS error is not reachable through errors.Is: %v", err)
			}
		})
	}
}

func TestLookupCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Lookup(ctx, &fakeEC2{pages: [][]types.Image{{}}}, trixieArm)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "DescribeImages in us-east-2 was interrupted") {
		t.Fatalf("err = %v", err)
	}
}

func TestLookupRejectsBadQueryWithoutCalling(t *testing.T) {
	f := &fakeEC2{}
	_, err := Lookup(context.Background(), f, Query{Architecture: "sparc"})
	if err == nil || len(f.calls) != 0 {
		t.Fatalf("err = %v, calls = %d", err, len(f.calls))
	}
}
