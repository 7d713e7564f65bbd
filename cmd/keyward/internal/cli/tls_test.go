package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
)

// testPKI is a private CA, with a certificate for a server on 127.0.0.1 and one for a client, in PEM files.
type testPKI struct {
	ca                            *x509.Certificate
	clientCert                    *x509.Certificate
	caFile                        string
	serverCertFile, serverKeyFile string
	clientCertFile, clientKeyFile string
	otherCAFile                   string // a CA that signed none of them
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	p := &testPKI{}
	caKey, ca, caFile := newCA(t, dir, "ca")
	p.ca, p.caFile = ca, caFile
	_, _, p.otherCAFile = newCA(t, dir, "other-ca")
	_, p.serverCertFile, p.serverKeyFile = newLeaf(t, dir, "server", ca, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.clientCert, p.clientCertFile, p.clientKeyFile = newLeaf(t, dir, "client", ca, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "keyward-test-client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return p
}

func (p *testPKI) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return pool
}

var serial int64

func newCA(t *testing.T, dir, name string) (*ecdsa.PrivateKey, *x509.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "keyward test " + name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	file := filepath.Join(dir, name+".pem")
	writePEM(t, file, "CERTIFICATE", der)
	return key, cert, file
}

func newLeaf(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (*x509.Certificate, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	return cert, certFile, keyFile
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
}

// freePort returns a loopback port nobody listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// A redis-server that speaks TLS only with certificates of a private CA, and asks clients for theirs.
func TestTLSWithAPrivateCA(t *testing.T) {
	pki := newTestPKI(t)
	tlsPort := freePort(t)
	redistest.Start(t, redistest.WithArgs(
		"--tls-port", strconv.Itoa(tlsPort),
		"--tls-cert-file", pki.serverCertFile, "--tls-key-file", pki.serverKeyFile,
		"--tls-ca-cert-file", pki.caFile, "--tls-auth-clients", "optional",
	))
	url := "rediss://127.0.0.1:" + strconv.Itoa(tlsPort)

	main := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := Main(context.Background(), args, Env{Stdout: &stdout, Stderr: &stderr})
		return code, stdout.String(), stderr.String()
	}
	code, stdout, stderr := main("status", "--redis", url, "--tls-ca-file", pki.caFile, "job")
	assert.Equal(t, ExitNotHeld, code, stderr)
	assert.Contains(t, stdout, "job  free", "connected, through TLS checked against the private CA")

	code, _, stderr = main("status", "--redis", url, "--tls-ca-file", pki.caFile,
		"--tls-cert-file", pki.clientCertFile, "--tls-key-file", pki.clientKeyFile, "job")
	assert.Equal(t, ExitNotHeld, code, "with a client certificate too: %s", stderr)

	code, _, stderr = main("status", "--redis", url, "job")
	assert.Equal(t, ExitUnavailable, code)
	assert.Contains(t, stderr, "signed by a CA this system does not trust: --tls-ca-file FILE names the CA")

	code, _, stderr = main("status", "--redis", url, "--tls-ca-file", pki.otherCAFile, "job")
	assert.Equal(t, ExitUnavailable, code)
	assert.Contains(t, stderr, "--tls-ca-file FILE names the CA")

	code, _, stderr = main("status", "--redis", "rediss://localhost:"+strconv.Itoa(tlsPort), "--tls-ca-file", pki.caFile, "job")
	assert.Equal(t, ExitNotHeld, code, "the certificate names localhost too: %s", stderr)
}
