package provisioner

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestDownloadTargetFromGeneratedData(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	data := map[string]interface{}{
		"ConnType": "ssh", "Host": "198.51.100.7", "Port": int64(2222), "User": "admin",
		"SSHPrivateKey": string(pem.EncodeToMemory(block)),
	}
	target := downloadTarget(data)
	if target == nil {
		t.Fatal("no download target from an SSH build's generated data")
	}
	if target.Address != "198.51.100.7:2222" || target.Config.User != "admin" || len(target.Config.Auth) != 1 {
		t.Errorf("target = %s as %s with %d auth methods", target.Address, target.Config.User, len(target.Config.Auth))
	}
	for name, edit := range map[string]func(map[string]interface{}){
		"winrm":    func(d map[string]interface{}) { d["ConnType"] = "winrm" },
		"no host":  func(d map[string]interface{}) { delete(d, "Host") },
		"no creds": func(d map[string]interface{}) { delete(d, "SSHPrivateKey") },
	} {
		d := map[string]interface{}{}
		for k, v := range data {
			d[k] = v
		}
		edit(d)
		if downloadTarget(d) != nil {
			t.Errorf("%s: a download target without what it needs", name)
		}
	}
}
