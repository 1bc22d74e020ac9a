//go:generate go tool packer-sdc struct-markdown
//go:generate go tool packer-sdc mapstructure-to-hcl2 -type Config

package nixcache

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
)

// Config is the `cache` block: a Nix binary cache in an S3 bucket of your
// own, read and written by the plugin with your AWS credentials.
type Config struct {
	// The S3 bucket that holds the cache (it must exist; the plugin neither
	// creates nor empties it). docs/guides/binary-cache.md shows how to
	// create one and the IAM statement the credentials need.
	S3Bucket string `mapstructure:"s3_bucket" required:"true"`
	// The bucket's region. Defaults to the build's region (the builder's
	// `region`; for the provisioner, the AWS SDK's default: `AWS_REGION` or
	// the profile's).
	Region string `mapstructure:"region" required:"false"`
	// A key prefix inside the bucket, such as `nix/`, so that one bucket can
	// hold other things or several caches. Defaults to the bucket's root.
	Prefix string `mapstructure:"prefix" required:"false"`
	// The URL of an S3-compatible service other than AWS S3 (for example
	// `https://minio.example.org:9000`); requests then use path-style
	// addressing. Defaults to AWS S3.
	Endpoint string `mapstructure:"endpoint" required:"false"`
	// A Nix secret key file, as `nix key generate-secret --key-name
	// cache.example.org-1 > cache.sec` writes it. The plugin signs what it
	// pushes with it and trusts its public half when pulling; it never
	// leaves this machine. Required to push.
	SigningKeyFile string `mapstructure:"signing_key_file" required:"false"`
	// Further Nix public keys (`name:base64`) whose signatures the pull
	// accepts, for a cache that other machines with their own keys push to.
	TrustedPublicKeys []string `mapstructure:"trusted_public_keys" required:"false"`
	// Let the build substitute store paths from the cache. Defaults to true.
	Pull *bool `mapstructure:"pull" required:"false"`
	// After a successful build, upload the store paths the instance built
	// (build-time dependencies included) to the cache. Defaults to true.
	Push *bool `mapstructure:"push" required:"false"`

	secret  *SecretKey
	trusted []PublicKey
	prefix  string
}

// S3 bucket naming rules (general purpose buckets): 3 to 63 characters of
// lower-case letters, digits, dots and hyphens, beginning and ending with a
// letter or digit, not formatted as an IP address, no "..", and none of the
// reserved prefixes and suffixes.
var bucketPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

func bucketNameError(b string) string {
	switch {
	case !bucketPattern.MatchString(b):
		return "3 to 63 lower-case letters, digits, dots and hyphens, beginning and ending with a letter or digit"
	case strings.Contains(b, ".."):
		return "no two adjacent dots"
	case net.ParseIP(b) != nil:
		return "not an IP address"
	case strings.HasPrefix(b, "xn--") || strings.HasPrefix(b, "sthree-") || strings.HasPrefix(b, "amzn-s3-demo-"):
		return "no xn--, sthree- or amzn-s3-demo- prefix"
	case strings.HasSuffix(b, "-s3alias") || strings.HasSuffix(b, "--ol-s3") || strings.HasSuffix(b, ".mrap") || strings.HasSuffix(b, "--x-s3"):
		return "no -s3alias, --ol-s3, .mrap or --x-s3 suffix"
	}
	return ""
}

// Prepare validates the block and reads the signing key. Every error names
// the option (cache.NAME) and says what to change.
func (c *Config) Prepare() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.S3Bucket == "" {
		bad("cache.s3_bucket: required; name the S3 bucket that holds the binary cache (docs/guides/binary-cache.md shows how to create one)")
	} else if why := bucketNameError(c.S3Bucket); why != "" {
		bad("cache.s3_bucket: %q is not an S3 bucket name (%s); give the bucket's name, not a URL or ARN", c.S3Bucket, why)
	}
	if c.Region != "" && !regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`).MatchString(c.Region) {
		bad("cache.region: %q is not an AWS region name; use a name such as \"us-east-2\", or leave it unset for the build's region", c.Region)
	}
	c.prefix = strings.Trim(c.Prefix, "/")
	if strings.ContainsAny(c.Prefix, " \\?#") || strings.Contains(c.Prefix, "//") || strings.Contains(c.Prefix, "..") {
		bad("cache.prefix: %q must be a plain key prefix such as \"nix/\" (no spaces, backslashes, '?', '#', '//' or '..')", c.Prefix)
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			bad("cache.endpoint: %q is not the URL of an S3 service; use a URL such as \"https://minio.example.org:9000\" (no path), or leave it unset for AWS S3", c.Endpoint)
		}
	}
	t := true
	if c.Pull == nil {
		c.Pull = &t
	}
	if c.Push == nil {
		c.Push = &t
	}
	if !*c.Pull && !*c.Push {
		bad("cache: pull and push are both false, so the cache would not be used; remove the cache block, or set one of them to true")
	}
	c.secret, c.trusted = nil, nil
	if c.SigningKeyFile != "" {
		k, err := ReadSecretKeyFile(c.SigningKeyFile)
		if err != nil {
			bad("cache.signing_key_file: %q: %v; create the key with `nix key generate-secret --key-name NAME-1 > FILE` (or `nix-store --generate-binary-cache-key`)", c.SigningKeyFile, err)
		} else {
			c.secret = k
			c.trusted = append(c.trusted, k.Public())
		}
	} else if *c.Push {
		bad("cache.signing_key_file: needed to push (push defaults to true); create a key with `nix key generate-secret --key-name NAME-1 > FILE` and name the file, or set push = false to only pull")
	}
	for i, s := range c.TrustedPublicKeys {
		k, err := ParsePublicKey(s)
		if err != nil {
			bad("cache.trusted_public_keys[%d]: %v; give a key as `nix key convert-secret-to-public` prints it (\"name-1:base64...\")", i, err)
			continue
		}
		c.trusted = append(c.trusted, k)
	}
	if *c.Pull && c.SigningKeyFile == "" && len(c.TrustedPublicKeys) == 0 {
		bad("cache.trusted_public_keys: pulling needs a key to verify the cache's signatures; set signing_key_file (its public half is trusted) or trusted_public_keys")
	}
	return errs
}

// PullEnabled reports whether the build substitutes from the cache.
func (c *Config) PullEnabled() bool { return c != nil && c.Pull != nil && *c.Pull }

// PushEnabled reports whether the build uploads to the cache.
func (c *Config) PushEnabled() bool { return c != nil && c.Push != nil && *c.Push && c.secret != nil }

// key is the object key of name under the prefix.
func (c *Config) key(name string) string {
	if c.prefix == "" {
		return name
	}
	return c.prefix + "/" + name
}

// URL names the cache for people: s3://bucket/prefix.
func (c *Config) URL() string {
	u := "s3://" + c.S3Bucket
	if c.prefix != "" {
		u += "/" + c.prefix
	}
	return u
}

// KeyNames are the names of the keys the pull trusts (the signing key's
// first), never the keys.
func (c *Config) KeyNames() []string {
	names := make([]string, len(c.trusted))
	for i, k := range c.trusted {
		names[i] = k.Name
	}
	return names
}

// SigningKeyName is the name of the signing key, or "".
func (c *Config) SigningKeyName() string {
	if c.secret == nil {
		return ""
	}
	return c.secret.Name
}
