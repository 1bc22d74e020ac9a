package testbed

import (
	"io"
	"net/http"
	"testing"
)

func TestIPServer(t *testing.T) {
	s, err := startIPServer(FakePublicIP)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := http.Get(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != FakePublicIP+"\n" {
		t.Errorf("got %q", b)
	}
}
