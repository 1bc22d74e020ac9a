package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// The test bed's KMS keys, in every region, as an account with EBS
// encryption under customer-managed keys has them: EBSKeyAlias names an
// enabled key EBS may use, DisabledKeyAlias a disabled one. An instance
// whose volume names a key EBS cannot use ends at launch with state reason
// Client.InternalError (moto_launcher.py, patch 10).
const (
	EBSKeyAlias      = "alias/testbed-ebs"
	DisabledKeyAlias = "alias/testbed-ebs-disabled"
)

// createKMSKeys makes the two keys of a region in moto's KMS.
func createKMSKeys(ctx context.Context, motoURL, region string) error {
	for _, k := range []struct {
		alias   string
		disable bool
	}{{EBSKeyAlias, false}, {DisabledKeyAlias, true}} {
		var created struct{ KeyMetadata struct{ KeyId, Arn string } }
		if err := kmsCall(ctx, motoURL, region, "CreateKey", map[string]any{"Description": "test bed EBS key " + k.alias}, &created); err != nil {
			return err
		}
		id := created.KeyMetadata.KeyId
		if err := kmsCall(ctx, motoURL, region, "CreateAlias", map[string]any{"AliasName": k.alias, "TargetKeyId": id}, nil); err != nil {
			return err
		}
		if k.disable {
			if err := kmsCall(ctx, motoURL, region, "DisableKey", map[string]any{"KeyId": id}, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// kmsCall sends one KMS JSON call straight to moto.
func kmsCall(ctx context.Context, motoURL, region, action string, in map[string]any, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, motoURL+"/", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "TrentService."+action)
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20250101/"+region+"/kms/aws4_request, SignedHeaders=host, Signature=0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("KMS %s: %w", action, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("KMS %s: moto answered %s: %s", action, resp.Status, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}
