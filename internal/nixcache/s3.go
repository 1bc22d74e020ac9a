package nixcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// bucket is the cache's bucket: the S3 calls the plugin makes, and URLs
// presigned for the instance.
type bucket struct {
	cfg     *Config
	client  *s3.Client
	presign *s3.PresignClient
}

// presignExpiry is how long a URL handed to the instance stays valid.
const presignExpiry = 15 * time.Minute

// openBucket makes the S3 client: base is the builder's AWS configuration
// (its credentials and region), nil for the SDK's default chain.
func openBucket(ctx context.Context, cfg *Config, base *aws.Config) (*bucket, error) {
	var ac aws.Config
	if base != nil {
		ac = base.Copy()
	} else {
		var err error
		if ac, err = awsconfig.LoadDefaultConfig(ctx); err != nil {
			return nil, fmt.Errorf("loading the AWS configuration for the cache: %w", err)
		}
	}
	if cfg.Region != "" {
		ac.Region = cfg.Region
	}
	if ac.Region == "" {
		return nil, errors.New("cache.region: no region for the cache's bucket; set cache.region or AWS_REGION")
	}
	// A build that cannot reach the bucket should not wait long for it.
	ac.RetryMaxAttempts = 2
	client := s3.NewFromConfig(ac, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(strings.TrimRight(cfg.Endpoint, "/"))
		}
		// S3-compatible services and local endpoints know no virtual-hosted
		// bucket names.
		if o.BaseEndpoint != nil {
			o.UsePathStyle = true
		}
	})
	return &bucket{cfg: cfg, client: client, presign: s3.NewPresignClient(client)}, nil
}

// errNotFound is a missing object.
var errNotFound = errors.New("not in the cache")

func isNotFound(err error) bool {
	var nsk *s3types.NoSuchKey
	var nf *s3types.NotFound
	var ae smithy.APIError
	return errors.As(err, &nsk) || errors.As(err, &nf) || (errors.As(err, &ae) && (ae.ErrorCode() == "NoSuchKey" || ae.ErrorCode() == "NotFound"))
}

// get reads a small object; errNotFound when it is missing.
func (b *bucket) get(ctx context.Context, name string) ([]byte, error) {
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.cfg.S3Bucket, Key: aws.String(b.cfg.key(name))})
	if err != nil {
		if isNotFound(err) {
			return nil, errNotFound
		}
		return nil, err
	}
	defer out.Body.Close()
	return io.ReadAll(io.LimitReader(out.Body, 1<<20))
}

// exists reports whether an object is there.
func (b *bucket) exists(ctx context.Context, name string) (bool, error) {
	_, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.cfg.S3Bucket, Key: aws.String(b.cfg.key(name))})
	if err == nil {
		return true, nil
	}
	if isNotFound(err) {
		return false, nil
	}
	return false, err
}

// put writes a small object.
func (b *bucket) put(ctx context.Context, name, contentType string, data []byte) error {
	_, err := b.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &b.cfg.S3Bucket, Key: aws.String(b.cfg.key(name)),
		Body: strings.NewReader(string(data)), ContentType: aws.String(contentType),
	})
	return err
}

// getURL is a presigned GET of an object, for the instance.
func (b *bucket) getURL(ctx context.Context, name string) (string, error) {
	req, err := b.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &b.cfg.S3Bucket, Key: aws.String(b.cfg.key(name))},
		s3.WithPresignExpires(presignExpiry))
	if err != nil {
		return "", err
	}
	return req.URL, nil
}

// putURL is a presigned PUT of an object, for the instance.
func (b *bucket) putURL(ctx context.Context, name string) (string, error) {
	req, err := b.presign.PresignPutObject(ctx, &s3.PutObjectInput{Bucket: &b.cfg.S3Bucket, Key: aws.String(b.cfg.key(name))},
		s3.WithPresignExpires(presignExpiry))
	if err != nil {
		return "", err
	}
	if req.Method != http.MethodPut {
		return "", fmt.Errorf("internal error: presigned %s for a PUT", req.Method)
	}
	return req.URL, nil
}

// multipart is a multipart upload of one object.
type multipart struct {
	b        *bucket
	name, id string
	parts    []s3types.CompletedPart
}

func (b *bucket) startMultipart(ctx context.Context, name string) (*multipart, error) {
	out, err := b.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &b.cfg.S3Bucket, Key: aws.String(b.cfg.key(name))})
	if err != nil {
		return nil, err
	}
	return &multipart{b: b, name: name, id: aws.ToString(out.UploadId)}, nil
}

// partURL is a presigned UploadPart of part n (from 1).
func (m *multipart) partURL(ctx context.Context, n int32) (string, error) {
	req, err := m.b.presign.PresignUploadPart(ctx, &s3.UploadPartInput{
		Bucket: &m.b.cfg.S3Bucket, Key: aws.String(m.b.cfg.key(m.name)), UploadId: &m.id, PartNumber: aws.Int32(n),
	}, s3.WithPresignExpires(presignExpiry))
	if err != nil {
		return "", err
	}
	return req.URL, nil
}

func (m *multipart) done(n int32, etag string) {
	m.parts = append(m.parts, s3types.CompletedPart{PartNumber: aws.Int32(n), ETag: aws.String(etag)})
}

func (m *multipart) complete(ctx context.Context) error {
	_, err := m.b.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &m.b.cfg.S3Bucket, Key: aws.String(m.b.cfg.key(m.name)), UploadId: &m.id,
		MultipartUpload: &s3types.CompletedMultipartUpload{Parts: m.parts},
	})
	return err
}

// abort removes the parts uploaded so far (they would be billed).
func (m *multipart) abort(ctx context.Context) {
	_, _ = m.b.client.AbortMultipartUpload(context.WithoutCancel(ctx), &s3.AbortMultipartUploadInput{
		Bucket: &m.b.cfg.S3Bucket, Key: aws.String(m.b.cfg.key(m.name)), UploadId: &m.id,
	})
}
