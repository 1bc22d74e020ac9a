package testbed

import (
	"fmt"
	"net"
	"net/http"
	"time"
)

// FakePublicIP is the address the test bed's public IP server answers with
// (TEST-NET-2, never routed).
const FakePublicIP = "198.51.100.77"

// ipServer answers every GET with the fake public IPv4 as text, like
// https://checkip.amazonaws.com does (address and a newline).
type ipServer struct {
	ln  net.Listener
	srv *http.Server
	ip  string
}

func startIPServer(ip string) (*ipServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("public IP server: %w", err)
	}
	s := &ipServer{ln: ln, ip: ip}
	s.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, s.ip)
	})}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *ipServer) URL() string  { return "http://" + s.ln.Addr().String() + "/" }
func (s *ipServer) Close() error { return s.srv.Close() }
