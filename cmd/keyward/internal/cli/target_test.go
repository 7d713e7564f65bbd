package cli

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseTargetSingleServer(t *testing.T) {
	tg, err := parseTarget("rediss://ops:pw@example.com:6380/2?dial_timeout=3s", 5*time.Second, tlsFiles{})
	require.NoError(t, err)
	require.NotNil(t, tg.single)
	assert.Equal(t, "ops", tg.single.Username)
	assert.Equal(t, "pw", tg.single.Password)
	assert.Equal(t, 2, tg.single.DB)
	require.NotNil(t, tg.single.TLSConfig)
	assert.Equal(t, "example.com", tg.single.TLSConfig.ServerName)
	assert.Equal(t, 3*time.Second, tg.single.DialTimeout, "the URL's own settings win")
	assert.True(t, tg.single.ContextTimeoutEnabled)
	assert.Equal(t, "Redis at example.com:6380", tg.where)
	assert.IsType(t, &redis.Client{}, closing(t, tg.client()))

	tg, err = parseTarget("unix:///run/redis.sock", 5*time.Second, tlsFiles{})
	require.NoError(t, err)
	assert.Equal(t, "/run/redis.sock", tg.single.Addr)
	assert.Equal(t, 5*time.Second, tg.single.DialTimeout, "--timeout")
}

func TestParseTargetCluster(t *testing.T) {
	for _, tc := range []struct {
		name, url string
		addrs     []string
		user, pw  string
		tls       bool
	}{
		{name: "one seed, default port", url: "redis+cluster://10.0.0.1", addrs: []string{"10.0.0.1:6379"}},
		{name: "seeds", url: "redis+cluster://a:7000,b:7001,c", addrs: []string{"a:7000", "b:7001", "c:6379"}},
		{name: "IPv6 and a trailing slash", url: "redis+cluster://[::1]:7000,[fe80::1]/", addrs: []string{"[::1]:7000", "[fe80::1]:6379"}},
		{name: "ACL user", url: "redis+cluster://ops:p%40ss@a:7000,b:7001", addrs: []string{"a:7000", "b:7001"}, user: "ops", pw: "p@ss"},
		{name: "password only", url: "redis+cluster://:pw@a:7000", addrs: []string{"a:7000"}, pw: "pw"},
		{name: "TLS", url: "rediss+cluster://a:7000,b:7001", addrs: []string{"a:7000", "b:7001"}, tls: true},
		{name: "scheme in capitals", url: "REDIS+CLUSTER://a:7000", addrs: []string{"a:7000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg, err := parseTarget(tc.url, 5*time.Second, tlsFiles{})
			require.NoError(t, err)
			require.NotNil(t, tg.cluster)
			assert.Equal(t, tc.addrs, tg.cluster.Addrs)
			assert.Equal(t, tc.user, tg.cluster.Username)
			assert.Equal(t, tc.pw, tg.cluster.Password)
			assert.Equal(t, tc.tls, tg.cluster.TLSConfig != nil)
			if tc.tls {
				assert.Empty(t, tg.cluster.TLSConfig.ServerName, "each node's certificate is checked against its own host")
			}
			assert.Equal(t, 5*time.Second, tg.cluster.DialTimeout)
			assert.True(t, tg.cluster.ContextTimeoutEnabled)
			assert.Equal(t, "the Cluster at "+strings.Join(tc.addrs, ","), tg.where)
			assert.IsType(t, &redis.ClusterClient{}, closing(t, tg.client()))
		})
	}
	tg, err := parseTarget("redis+cluster://a:7000?dial_timeout=2s&max_redirects=5", time.Second, tlsFiles{})
	require.NoError(t, err)
	assert.Equal(t, 2*time.Second, tg.cluster.DialTimeout)
	assert.Equal(t, 5, tg.cluster.MaxRedirects, "go-redis's cluster options")
}

func TestParseTargetSentinel(t *testing.T) {
	for _, tc := range []struct {
		name, url        string
		sentinels        []string
		master           string
		db               int
		user, pw         string
		sentUser, sentPw string
		tls              bool
	}{
		{name: "one sentinel, default port", url: "redis+sentinel://s1/mymaster", sentinels: []string{"s1:26379"}, master: "mymaster"},
		{name: "sentinels and a database", url: "redis+sentinel://s1:5000,s2,[::1]:5002/cache/3",
			sentinels: []string{"s1:5000", "s2:26379", "[::1]:5002"}, master: "cache", db: 3},
		{name: "the data nodes' password", url: "redis+sentinel://ops:pw@s1,s2/m", sentinels: []string{"s1:26379", "s2:26379"},
			master: "m", user: "ops", pw: "pw"},
		{name: "the sentinels' own password", url: "redis+sentinel://:pw@s1/m?sentinel_username=sen&sentinel_password=spw",
			sentinels: []string{"s1:26379"}, master: "m", pw: "pw", sentUser: "sen", sentPw: "spw"},
		{name: "TLS", url: "rediss+sentinel://s1,s2/m", sentinels: []string{"s1:26379", "s2:26379"}, master: "m", tls: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg, err := parseTarget(tc.url, 5*time.Second, tlsFiles{})
			require.NoError(t, err)
			o := tg.failover
			require.NotNil(t, o)
			assert.Equal(t, tc.sentinels, o.SentinelAddrs)
			assert.Equal(t, tc.master, o.MasterName)
			assert.Equal(t, tc.db, o.DB)
			assert.Equal(t, tc.user, o.Username)
			assert.Equal(t, tc.pw, o.Password)
			assert.Equal(t, tc.sentUser, o.SentinelUsername)
			assert.Equal(t, tc.sentPw, o.SentinelPassword)
			assert.Equal(t, tc.tls, o.TLSConfig != nil)
			if tc.tls {
				assert.Empty(t, o.TLSConfig.ServerName)
			}
			assert.True(t, o.ContextTimeoutEnabled)
			assert.Contains(t, tg.where, `the master "`+tc.master+`" of the sentinels at `+strings.Join(tc.sentinels, ","))
			assert.IsType(t, &redis.Client{}, closing(t, tg.client()))
		})
	}
}

// closing closes rdb at the end of the test.
func closing(t *testing.T, rdb redis.UniversalClient) redis.UniversalClient {
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func TestParseTargetErrors(t *testing.T) {
	for _, tc := range []struct {
		url, want string
	}{
		{"localhost:6379", `bad Redis URL "localhost:6379": want redis://`},
		{"http://u:sekret@localhost", `bad Redis URL "http://u:xxxxx@localhost": invalid URL scheme http:// (want redis://`},
		{"redis+ring://a:1", `invalid URL scheme redis+ring://`},
		{"unix+cluster:///x", `invalid URL scheme unix+cluster://`},
		{"redis://:sekret@localhost:abc", `bad Redis URL "redis://:xxxxx@localhost:abc": invalid port`},
		{"redis://u:sek ret@local host:1", `bad Redis URL "redis://u:xxxxx@local host:1"`},
		{"redis://localhost/x", `invalid database number`},
		{"redis+cluster://:sekret@a:1/2", `bad Redis URL "redis+cluster://:xxxxx@a:1/2": unexpected path /2: a Cluster has only database 0`},
		{"redis+cluster://a:1,,b:2", "empty host in the node list"},
		{"redis+cluster://a:1,b:x", `bad node "b:x": invalid port "x"`},
		{"redis+cluster://a:99999", `invalid port "99999"`},
		{"redis+cluster://::1", "put an IPv6 address in brackets"},
		{"redis+cluster://a:1?bogus=1", "unexpected option: bogus"},
		{"redis+cluster://sekret@a:1#frag", `"redis+cluster://xxxxx@a:1#frag": unexpected #fragment`},
		{"redis+sentinel://s1,s2", "missing master name: want redis+sentinel://HOST:PORT,HOST:PORT/MASTER[/DB]"},
		{"redis+sentinel://s1/m/1/2", "unexpected path /m/1/2"},
		{"redis+sentinel://s1/m/x", `invalid database number: "x"`},
		{"redis+sentinel://s1/m?master_name=n", "the master's name is the URL's path"},
		{"redis+sentinel://s1/m?sentinel_password=sekret&x=1", `"redis+sentinel://s1/m?sentinel_password=xxxxx&x=1": unexpected option: x`},
		{"redis+sentinel://u:sekret@s1/m?dial_timeout=soon", `"redis+sentinel://u:xxxxx@s1/m?dial_timeout=soon"`},
	} {
		t.Run(tc.url, func(t *testing.T) {
			_, err := parseTarget(tc.url, time.Second, tlsFiles{})
			require.Error(t, err)
			var usage *usageError
			assert.ErrorAs(t, err, &usage, "a bad URL is a usage error: exit 64")
			assert.Contains(t, err.Error(), tc.want)
			if strings.Contains(tc.url, "://") {
				assert.NotContains(t, err.Error(), "sekret")
				assert.NotContains(t, err.Error(), "sek ret")
			}
		})
	}
}

func TestRedact(t *testing.T) {
	for raw, want := range map[string]string{
		"redis://localhost:6379":                           "redis://localhost:6379",
		"redis://u:pw@h:1/0":                               "redis://u:xxxxx@h:1/0",
		"redis://pw@h:1":                                   "redis://xxxxx@h:1",
		"redis+sentinel://u:p@w@s1,s2/m?password=x&db=1":   "redis+sentinel://u:xxxxx@s1,s2/m?password=xxxxx&db=1",
		"rediss+cluster://:pw@[::1]:7000,b?dial_timeout=1": "rediss+cluster://:xxxxx@[::1]:7000,b?dial_timeout=1",
		"no-scheme:pw@host":                                "no-scheme:pw@host",
	} {
		assert.Equal(t, want, redact(raw), raw)
	}
}

func TestTLSFiles(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))

	t.Run("a private CA and a client certificate", func(t *testing.T) {
		for _, url := range []string{"rediss://127.0.0.1:6380", "rediss+cluster://a:1,b:2", "rediss+sentinel://s/m"} {
			tg, err := parseTarget(url, time.Second, tlsFiles{ca: pki.caFile, cert: pki.clientCertFile, key: pki.clientKeyFile})
			require.NoError(t, err, url)
			cfg := tg.tlsConfig()
			require.NotNil(t, cfg.RootCAs, url)
			assert.True(t, cfg.RootCAs.Equal(pki.pool()), "the CA of the file, not the system's")
			require.Len(t, cfg.Certificates, 1)
			assert.Equal(t, pki.clientCert.Raw, cfg.Certificates[0].Certificate[0])
			assert.GreaterOrEqual(t, cfg.MinVersion, uint16(tls.VersionTLS12), url)
		}
	})

	for _, tc := range []struct {
		name  string
		url   string
		files tlsFiles
		want  string
	}{
		{name: "not TLS", url: "redis://h:1", files: tlsFiles{ca: pki.caFile}, want: "the URL's scheme is redis://, not rediss://"},
		{name: "not TLS, cluster", url: "redis+cluster://h:1", files: tlsFiles{cert: "c", key: "k"}, want: "scheme is redis+cluster://"},
		{name: "missing CA file", url: "rediss://h:1", files: tlsFiles{ca: filepath.Join(dir, "none.pem")}, want: "--tls-ca-file: open"},
		{name: "no certificate in the CA file", url: "rediss://h:1", files: tlsFiles{ca: notPEM}, want: "no PEM certificate in it"},
		{name: "certificate without key", url: "rediss://h:1", files: tlsFiles{cert: pki.clientCertFile}, want: "--tls-cert-file needs --tls-key-file"},
		{name: "key without certificate", url: "rediss://h:1", files: tlsFiles{key: pki.clientKeyFile}, want: "--tls-key-file needs --tls-cert-file"},
		{name: "key of another certificate", url: "rediss://h:1", files: tlsFiles{cert: pki.clientCertFile, key: pki.serverKeyFile}, want: "private key does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseTarget(tc.url, time.Second, tc.files)
			var usage *usageError
			require.ErrorAs(t, err, &usage)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
