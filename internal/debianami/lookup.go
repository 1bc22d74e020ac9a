package debianami

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
)

// Query says which image to look for.
type Query struct {
	// Release is the Debian release; the zero value means DefaultRelease.
	Release Release
	// Architecture is Debian's name for it, "arm64" or "amd64" (the EC2
	// spellings are accepted too); empty means arm64.
	Architecture string
	// Owners are the accounts whose images count; empty means DebianOwner.
	// Account ids are checked against each image's owner; the aliases
	// "amazon" and "aws-marketplace" against its owner alias; "self" is left
	// to EC2 (the caller's account id is not known here).
	Owners []string
	// Filters are extra DescribeImages filters, name to one value each (a
	// value holding commas stays one value). They narrow the search; the
	// release, architecture, state and owner rules always apply.
	Filters map[string]string
	// IncludeDeprecated lets images whose deprecation time has passed win.
	IncludeDeprecated bool
	// Region is used in messages only; the client decides where calls go.
	Region string
}

// Image is the chosen AMI.
type Image struct {
	ID             string
	Name           string
	Description    string
	Architecture   string // EC2's spelling: arm64 or x86_64
	Owner          string
	RootDeviceName string
	BootMode       string
	CreationDate   time.Time
	// DeprecationTime is nil when the image has none.
	DeprecationTime *time.Time
	Release         Release
}

// ownerAliases are the DescribeImages owner values that are not account ids.
var ownerAliases = []string{"self", "amazon", "aws-marketplace"}

var accountID = regexp.MustCompile(`^[0-9]{12}$`)

// ValidateOwners checks that each owner is an account id or an alias
// DescribeImages accepts.
func ValidateOwners(owners []string) error {
	for _, o := range owners {
		if !accountID.MatchString(o) && !slices.Contains(ownerAliases, o) {
			return fmt.Errorf("%q is not an AWS account id (12 digits) nor one of %s; use one of those", o, strings.Join(quoteAll(ownerAliases), ", "))
		}
	}
	return nil
}

// normalize fills in the query's defaults and checks it.
func (q Query) normalize() (Query, error) {
	if q.Release == (Release{}) {
		q.Release = DefaultRelease
	}
	known := false
	for _, r := range Releases {
		if r == q.Release {
			known = true
		}
	}
	if !known {
		return q, fmt.Errorf("unknown Debian release %d (%s); use one of %s", q.Release.Number, q.Release.Codename, validReleases())
	}
	arch, err := ParseArchitecture(q.Architecture)
	if err != nil {
		return q, err
	}
	q.Architecture = arch
	if len(q.Owners) == 0 {
		q.Owners = []string{DebianOwner}
	}
	if err := ValidateOwners(q.Owners); err != nil {
		return q, fmt.Errorf("owners: %w", err)
	}
	return q, nil
}

// input is the DescribeImages request for a normalized query. A user filter
// with the name of a default one (name, architecture, state, image-type)
// takes its place in the request, so that EC2 sees one filter per name;
// Choose applies the release, architecture and state rules regardless.
func input(q Query) *ec2.DescribeImagesInput {
	defaults := []types.Filter{
		{Name: aws.String("name"), Values: []string{NamePattern(q.Release, q.Architecture)}},
		{Name: aws.String("architecture"), Values: []string{EC2Architecture(q.Architecture)}},
		{Name: aws.String("state"), Values: []string{"available"}},
		{Name: aws.String("image-type"), Values: []string{"machine"}},
	}
	var filters []types.Filter
	for _, f := range defaults {
		if v, ok := q.Filters[*f.Name]; ok {
			f.Values = []string{v}
		}
		filters = append(filters, f)
	}
	for _, k := range sortedKeys(q.Filters) {
		if slices.ContainsFunc(defaults, func(f types.Filter) bool { return *f.Name == k }) {
			continue
		}
		filters = append(filters, types.Filter{Name: aws.String(k), Values: []string{q.Filters[k]}})
	}
	return &ec2.DescribeImagesInput{
		Owners:  slices.Clone(q.Owners),
		Filters: filters,
		// Always ask for deprecated images too: the choice rule decides, and
		// it can then say that only deprecated images matched.
		IncludeDeprecated: aws.Bool(true),
	}
}

// maxPages bounds the pages read from a server that never stops.
const maxPages = 1000

// Lookup asks EC2 for the images of q's release and architecture and returns
// the one Choose picks.
func Lookup(ctx context.Context, client ec2.DescribeImagesAPIClient, q Query) (*Image, error) {
	q, err := q.normalize()
	if err != nil {
		return nil, err
	}
	var images []types.Image
	seen := map[string]bool{}
	pages := ec2.NewDescribeImagesPaginator(client, input(q))
	for page := 0; pages.HasMorePages(); page++ {
		if page == maxPages {
			return nil, fmt.Errorf("DescribeImages in %s: gave up after %d pages; narrow the search with filters", regionName(q.Region), maxPages)
		}
		out, err := pages.NextPage(ctx)
		if err != nil {
			return nil, callError("DescribeImages", q.Region, err)
		}
		images = append(images, out.Images...)
		// The paginator's StopOnDuplicateToken sees only a token repeated at
		// once, and ends quietly; a cycle is a broken endpoint worth naming.
		next := aws.ToString(out.NextToken)
		if next != "" && seen[next] {
			return nil, fmt.Errorf("DescribeImages in %s: the endpoint returned the page token %q twice; it is not paginating correctly (check ec2_endpoint)", regionName(q.Region), next)
		}
		seen[next] = true
	}
	return Choose(images, q, time.Now())
}

// callError explains a failed AWS call: which call, where, and why. The AWS
// error stays reachable through errors.As/Is.
func callError(call, region string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &wrapped{fmt.Sprintf("%s in %s was interrupted (%v); the lookup ran out of time or was cancelled, try again", call, regionName(region), err), err}
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		hint := "check your credentials and region"
		switch code := apiErr.ErrorCode(); {
		case awscommon.IsCredentialError(code):
			hint = "check your credentials (access_key/secret_key, profile or the environment) and that they are valid in this region"
		case awscommon.IsPermissionError(code):
			hint = "the credentials lack permission; allow ec2:" + call + " for them"
		case strings.Contains(code, "Throttl"), strings.Contains(code, "RequestLimitExceeded"):
			hint = "EC2 is throttling these credentials; raise max_retries or try again later"
		case strings.HasPrefix(code, "InvalidParameter"), strings.HasPrefix(code, "InvalidFilter"),
			strings.HasPrefix(code, "InvalidUserID"):
			hint = "check the owners and filters options"
		}
		msg := apiErr.ErrorMessage()
		if msg == "" {
			msg = "(no message)"
		}
		return &wrapped{fmt.Sprintf("%s in %s failed: %s: %s; %s", call, regionName(region), apiErr.ErrorCode(), msg, hint), err}
	}
	return &wrapped{fmt.Sprintf("%s in %s failed: %v; check your credentials and region, and the network or ec2_endpoint", call, regionName(region), err), err}
}

// wrapped is an explained error that keeps the original reachable.
type wrapped struct {
	msg string
	err error
}

func (e *wrapped) Error() string { return e.msg }
func (e *wrapped) Unwrap() error { return e.err }

func regionName(region string) string {
	if region == "" {
		return "the configured region"
	}
	return region
}

// candidate is an image that passed every rule, with what it is ranked by.
type candidate struct {
	img      types.Image
	created  time.Time
	nameDate string
	build    int
	name     string
	id       string
}

// rejections counts why images were left out, for the no-match message.
type rejections struct {
	total, deprecated, owner, name, arch, state int
}

// Choose applies the choice rule to images DescribeImages returned for q:
// only images owned by one of q.Owners, named exactly
// debian-<N>-<arch>-<YYYYMMDD>-<build>, of q's EC2 architecture, available
// machine images, and not deprecated at now unless q.IncludeDeprecated. The
// newest CreationDate wins; ties go to the later name date, then the higher
// build number, then the greater name.
func Choose(images []types.Image, q Query, now time.Time) (*Image, error) {
	q, err := q.normalize()
	if err != nil {
		return nil, err
	}
	pattern := regexp.MustCompile(fmt.Sprintf(`^debian-%d-%s-([0-9]{8})-([0-9]+)$`, q.Release.Number, regexp.QuoteMeta(q.Architecture)))
	wantArch := EC2Architecture(q.Architecture)
	var rej rejections
	var cands []candidate
	for _, img := range images {
		rej.total++
		name := aws.ToString(img.Name)
		m := pattern.FindStringSubmatch(name)
		if m == nil {
			rej.name++
			continue
		}
		if _, err := time.Parse("20060102", m[1]); err != nil {
			rej.name++
			continue
		}
		build, err := strconv.Atoi(m[2])
		if err != nil {
			rej.name++
			continue
		}
		if !ownedBy(img, q.Owners) {
			rej.owner++
			continue
		}
		if string(img.Architecture) != wantArch {
			rej.arch++
			continue
		}
		if (img.State != "" && img.State != types.ImageStateAvailable) ||
			(img.ImageType != "" && img.ImageType != types.ImageTypeValuesMachine) {
			rej.state++
			continue
		}
		if dep, ok := parseTime(aws.ToString(img.DeprecationTime)); ok && !dep.After(now) && !q.IncludeDeprecated {
			rej.deprecated++
			continue
		}
		created, ok := parseTime(aws.ToString(img.CreationDate))
		if !ok {
			// No usable creation date: rank by the date in the name.
			created, _ = time.Parse("20060102", m[1])
		}
		cands = append(cands, candidate{img: img, created: created, nameDate: m[1], build: build, name: name, id: aws.ToString(img.ImageId)})
	}
	if len(cands) == 0 {
		return nil, noMatch(q, rej)
	}
	sort.SliceStable(cands, func(i, j int) bool { return better(cands[i], cands[j]) })
	return toImage(cands[0], q), nil
}

// better reports whether a ranks before b.
func better(a, b candidate) bool {
	if !a.created.Equal(b.created) {
		return a.created.After(b.created)
	}
	if a.nameDate != b.nameDate {
		return a.nameDate > b.nameDate
	}
	if a.build != b.build {
		return a.build > b.build
	}
	if a.name != b.name {
		return a.name > b.name
	}
	return a.id > b.id
}

func ownedBy(img types.Image, owners []string) bool {
	owner := aws.ToString(img.OwnerId)
	alias := aws.ToString(img.ImageOwnerAlias)
	for _, o := range owners {
		switch {
		case o == "self":
			// Only the caller's own images come back for "self"; the
			// caller's account id is not known here, so EC2 is trusted.
			return true
		case accountID.MatchString(o):
			if owner == o {
				return true
			}
		default:
			if alias != "" && alias == o {
				return true
			}
		}
	}
	return false
}

func parseTime(s string) (time.Time, bool) {
	if s == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false
	}
	return t.UTC(), true
}

func toImage(c candidate, q Query) *Image {
	img := c.img
	out := &Image{
		ID:             aws.ToString(img.ImageId),
		Name:           c.name,
		Description:    aws.ToString(img.Description),
		Architecture:   string(img.Architecture),
		Owner:          aws.ToString(img.OwnerId),
		RootDeviceName: aws.ToString(img.RootDeviceName),
		BootMode:       string(img.BootMode),
		CreationDate:   c.created,
		Release:        q.Release,
	}
	if dep, ok := parseTime(aws.ToString(img.DeprecationTime)); ok {
		out.DeprecationTime = &dep
	}
	return out
}

// noMatch explains an empty choice and what to change.
func noMatch(q Query, rej rejections) error {
	var filters []string
	for _, f := range input(q).Filters {
		filters = append(filters, aws.ToString(f.Name)+"="+strings.Join(f.Values, ","))
	}
	msg := fmt.Sprintf("no Debian %d (%s) %s AMI owned by %s in region %s matches (filters: %s)",
		q.Release.Number, q.Release.Codename, q.Architecture, strings.Join(q.Owners, ", "),
		regionName(q.Region), strings.Join(filters, ", "))
	var why []string
	if rej.total == 0 {
		why = append(why, "EC2 returned no images")
	} else {
		why = append(why, fmt.Sprintf("EC2 returned %d image(s)", rej.total))
		for _, r := range []struct {
			n    int
			text string
		}{
			{rej.deprecated, "deprecated"},
			{rej.owner, "owned by another account"},
			{rej.name, fmt.Sprintf("not named debian-%d-%s-<YYYYMMDD>-<build>", q.Release.Number, q.Architecture)},
			{rej.arch, "of another architecture"},
			{rej.state, "not available machine images"},
		} {
			if r.n > 0 {
				why = append(why, fmt.Sprintf("%d %s", r.n, r.text))
			}
		}
	}
	hint := "check the region, or set include_deprecated = true, or widen owners/filters"
	if rej.deprecated > 0 && !q.IncludeDeprecated {
		hint = "set include_deprecated = true to accept a deprecated image, or check the region, or widen owners/filters"
	}
	return fmt.Errorf("%s: %s; %s", msg, strings.Join(why, ", "), hint)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}
