package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// A Redis URL names one of three deployments. The scheme says which, so that one string ($REDIS_URL, --redis,
// an item of --nodes) carries everything:
//
//	redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?OPTIONS]         one server (go-redis's redis.ParseURL);
//	rediss://…  TLS,  unix://[[USER]:PASSWORD@]/path/to/socket   rediss:// for TLS, unix:// for a socket
//	redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]…][?OPTIONS]
//	                                                              a Cluster, through any of its nodes (the
//	                                                              seeds); port 6379 by default
//	redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]…]/MASTER[/DB][?OPTIONS]
//	                                                              the master MASTER of a Sentinel group, found
//	                                                              through these sentinels; port 26379 by default
//	rediss+cluster://…, rediss+sentinel://…                       the same over TLS (to every node, sentinels
//	                                                              included)
//
// The "+sentinel" form is the one redis-sentinel-url, redisvl and Prefect read; "+cluster" follows it. The user
// and password are the data nodes'; sentinels that want their own take sentinel_username= and
// sentinel_password= options. Other OPTIONS are go-redis's URL options (dial_timeout=3s, …): a Cluster's
// those of redis.ParseClusterURL, a Sentinel group's those of redis.ParseFailoverURL.

// Schemes of the three deployments.
const (
	schemeCluster  = "+cluster"
	schemeSentinel = "+sentinel"
)

// Default ports of the nodes a URL lists.
const (
	defaultRedisPort    = "6379"
	defaultSentinelPort = "26379"
)

// urlForms is the list of forms that a bad URL's message offers.
const urlForms = "redis://HOST:PORT, rediss://HOST:PORT (TLS), unix:///path, " +
	"redis+cluster://HOST:PORT,HOST:PORT or redis+sentinel://HOST:PORT,HOST:PORT/MASTER"

// target is the Redis deployment a URL names, with keyward's client settings: exactly one of single, cluster
// and failover is set.
type target struct {
	single   *redis.Options
	cluster  *redis.ClusterOptions
	failover *redis.FailoverOptions
	// where names the deployment in messages, without a password: "Redis at HOST:PORT", "the Cluster at
	// HOST:PORT,…", `the master "NAME" of the sentinels at HOST:PORT,…`.
	where string
}

// tlsFiles are the --tls-* flags: files for the TLS of rediss URLs.
type tlsFiles struct {
	ca, cert, key string
}

func (f tlsFiles) set() bool { return f.ca != "" || f.cert != "" || f.key != "" }

// config adds the files' CA and client certificate to cfg.
func (f tlsFiles) config(cfg *tls.Config) error {
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return usagef("--tls-ca-file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return usagef("--tls-ca-file %s: no PEM certificate in it", f.ca)
		}
		cfg.RootCAs = pool
	}
	switch {
	case f.cert != "" && f.key != "":
		pair, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return usagef("--tls-cert-file, --tls-key-file: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	case f.cert != "":
		return usagef("--tls-cert-file needs --tls-key-file, the certificate's private key")
	case f.key != "":
		return usagef("--tls-key-file needs --tls-cert-file, the certificate of the key")
	}
	return nil
}

// parseTarget parses raw as a Redis URL of one of the forms above, and applies keyward's client settings: timeout
// as the dial timeout (unless the URL sets one) and the TLS files. Errors never show a password and are usage
// errors.
func parseTarget(raw string, timeout time.Duration, files tlsFiles) (*target, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, badURL(raw, "want "+urlForms)
	}
	var t *target
	var err error
	switch base, kind := splitScheme(scheme); {
	case kind == "" && (base == "redis" || base == "rediss" || base == "unix"):
		t, err = parseSingle(raw)
	case kind == schemeCluster && (base == "redis" || base == "rediss"):
		t, err = parseCluster(base, rest)
	case kind == schemeSentinel && (base == "redis" || base == "rediss"):
		t, err = parseSentinel(base, rest)
	default:
		return nil, badURL(raw, fmt.Sprintf("invalid URL scheme %s:// (want %s)", scheme, urlForms))
	}
	if err != nil {
		return nil, badURL(raw, strings.TrimPrefix(err.Error(), "redis: "))
	}
	if err := t.settle(timeout, files, scheme); err != nil {
		return nil, err
	}
	return t, nil
}

// splitScheme splits "rediss+cluster" into "rediss" and "+cluster", lower-cased.
func splitScheme(scheme string) (base, kind string) {
	scheme = strings.ToLower(scheme)
	if i := strings.IndexByte(scheme, '+'); i >= 0 {
		return scheme[:i], scheme[i:]
	}
	return scheme, ""
}

func badURL(raw, msg string) error {
	return usagef("bad Redis URL %q: %s", redact(raw), msg)
}

// parseSingle parses a redis://, rediss:// or unix:// URL with go-redis's own parser.
func parseSingle(raw string) (*target, error) {
	opt, err := redis.ParseURL(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error quotes the whole URL, password and all
		}
		return nil, err
	}
	return &target{single: opt, where: "Redis at " + opt.Addr}, nil
}

// multiURL is a URL that lists several nodes: scheme://[userinfo@]node,node…[/path][?query].
type multiURL struct {
	user  *url.Userinfo
	nodes []string // host:port, with the default port filled in
	path  []string // the path's segments
	query url.Values
}

// parseMulti parses what follows "scheme://" in a URL that lists nodes, each with defaultPort unless it has one.
// It splits the node list itself: net/url takes one host, and refuses an IPv6 literal among several.
func parseMulti(rest, defaultPort string) (*multiURL, error) {
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	userinfo, hosts := "", authority
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo, hosts = authority[:i+1], authority[i+1:]
	}
	// net/url parses the user info, path and query, with a placeholder for the nodes.
	u, err := url.Parse("x://" + userinfo + "nodes" + tail)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, err
	}
	if u.Fragment != "" {
		return nil, errors.New("unexpected #fragment")
	}
	m := &multiURL{user: u.User, query: u.Query()}
	for _, s := range strings.Split(u.Path, "/") {
		if s != "" {
			m.path = append(m.path, s)
		}
	}
	for _, h := range strings.Split(hosts, ",") {
		addr, err := nodeAddr(h, defaultPort)
		if err != nil {
			return nil, err
		}
		m.nodes = append(m.nodes, addr)
	}
	return m, nil
}

// nodeAddr checks one HOST[:PORT] of a node list and returns it as host:port.
func nodeAddr(h, defaultPort string) (string, error) {
	if h == "" {
		return "", errors.New("empty host in the node list (want HOST:PORT,HOST:PORT)")
	}
	host, port := h, defaultPort
	if strings.HasPrefix(h, "[") || strings.Count(h, ":") == 1 {
		var err error
		if host, port, err = net.SplitHostPort(h); err != nil {
			if !strings.HasSuffix(h, "]") {
				return "", fmt.Errorf("bad node %q", h)
			}
			host, port = strings.Trim(h, "[]"), defaultPort // [::1] without a port
		}
	} else if strings.Contains(h, ":") {
		return "", fmt.Errorf("bad node %q: put an IPv6 address in brackets, [::1]:%s", h, defaultPort)
	}
	if host == "" {
		return "", fmt.Errorf("bad node %q: empty host", h)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("bad node %q: invalid port %q", h, port)
	}
	return net.JoinHostPort(host, port), nil
}

// goRedisURL builds the URL go-redis's parsers take: the first node as host, the others as addr= options,
// without the user info, which the caller sets on the options itself (a parse error then cannot show it).
func (m *multiURL) goRedisURL(base, path string) string {
	q := url.Values{}
	for k, v := range m.query {
		q[k] = v
	}
	for _, n := range m.nodes[1:] {
		q.Add("addr", n)
	}
	s := base + "://" + m.nodes[0] + path
	if len(q) > 0 {
		s += "?" + q.Encode()
	}
	return s
}

func (m *multiURL) password() (string, string) {
	if m.user == nil {
		return "", ""
	}
	p, _ := m.user.Password()
	return m.user.Username(), p
}

func parseCluster(base, rest string) (*target, error) {
	m, err := parseMulti(rest, defaultRedisPort)
	if err != nil {
		return nil, err
	}
	if len(m.path) > 0 {
		return nil, fmt.Errorf("unexpected path /%s: a Cluster has only database 0", strings.Join(m.path, "/"))
	}
	opt, err := redis.ParseClusterURL(m.goRedisURL(base, ""))
	if err != nil {
		return nil, err
	}
	opt.Username, opt.Password = m.password()
	return &target{cluster: opt, where: "the Cluster at " + strings.Join(m.nodes, ",")}, nil
}

func parseSentinel(base, rest string) (*target, error) {
	m, err := parseMulti(rest, defaultSentinelPort)
	if err != nil {
		return nil, err
	}
	var path string
	switch len(m.path) {
	case 0:
		return nil, errors.New("missing master name: want redis+sentinel://HOST:PORT,HOST:PORT/MASTER[/DB]")
	case 1:
	case 2:
		path = "/" + m.path[1] // the database: go-redis's parser checks it
	default:
		return nil, fmt.Errorf("unexpected path /%s: want /MASTER or /MASTER/DB", strings.Join(m.path, "/"))
	}
	if m.query.Has("master_name") {
		return nil, errors.New("master_name option: the master's name is the URL's path, /MASTER")
	}
	sentinelUser, sentinelPassword := m.query.Get("sentinel_username"), m.query.Get("sentinel_password")
	m.query.Del("sentinel_username")
	m.query.Del("sentinel_password")
	m.query.Set("master_name", m.path[0])
	opt, err := redis.ParseFailoverURL(m.goRedisURL(base, path))
	if err != nil {
		return nil, err
	}
	if m.user != nil {
		opt.Username, opt.Password = m.password()
	}
	opt.SentinelUsername, opt.SentinelPassword = sentinelUser, sentinelPassword
	return &target{failover: opt, where: fmt.Sprintf("the master %q of the sentinels at %s", m.path[0], strings.Join(m.nodes, ","))}, nil
}

// settle applies keyward's client settings, the same for every deployment.
func (t *target) settle(timeout time.Duration, files tlsFiles, scheme string) error {
	cfg := t.tlsConfig()
	if files.set() {
		if cfg == nil {
			return usagef("--tls-ca-file, --tls-cert-file and --tls-key-file are for TLS: the URL's scheme is %s://, "+
				"not rediss://, rediss+cluster:// or rediss+sentinel://", scheme)
		}
		if err := files.config(cfg); err != nil {
			return err
		}
	}
	if cfg != nil && cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12 // as go-redis's own redis:// parser sets it
	}
	if cfg != nil && t.single == nil {
		// go-redis checks every node's certificate against the first host of the URL; each node's own name is
		// the one to check: tls.Dial uses the address it dials when ServerName is empty.
		cfg.ServerName = ""
	}
	// A refused dial will not succeed 100 ms later; keep the first error quick. A context deadline bounds a
	// command's socket deadline: a refresh never outlives the lock's validity. Maintenance notifications are
	// for Redis Enterprise/Cloud hand-overs and start background work; a lock command does not need them.
	noMaint := &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	switch {
	case t.single != nil:
		o := t.single
		o.DialTimeout = or(o.DialTimeout, timeout)
		o.DialerRetries, o.ContextTimeoutEnabled, o.DisableIdentity, o.MaintNotificationsConfig = 2, true, true, noMaint
	case t.cluster != nil:
		o := t.cluster
		o.DialTimeout = or(o.DialTimeout, timeout)
		o.DialerRetries, o.ContextTimeoutEnabled, o.DisableIdentity, o.MaintNotificationsConfig = 2, true, true, noMaint
	case t.failover != nil:
		o := t.failover
		o.DialTimeout = or(o.DialTimeout, timeout)
		o.DialerRetries, o.ContextTimeoutEnabled, o.DisableIdentity = 2, true, true
	}
	return nil
}

func or(d, otherwise time.Duration) time.Duration {
	if d == 0 {
		return otherwise
	}
	return d
}

func (t *target) tlsConfig() *tls.Config {
	switch {
	case t.single != nil:
		return t.single.TLSConfig
	case t.cluster != nil:
		return t.cluster.TLSConfig
	}
	return t.failover.TLSConfig
}

// client returns a new client for the deployment: a *redis.Client for one server or a Sentinel group's master,
// a *redis.ClusterClient for a Cluster.
func (t *target) client() redis.UniversalClient {
	switch {
	case t.single != nil:
		return redis.NewClient(t.single)
	case t.cluster != nil:
		return redis.NewClusterClient(t.cluster)
	}
	return redis.NewFailoverClient(t.failover)
}

// redact returns raw with its passwords replaced by "xxxxx" (the user info's, and the password= and
// sentinel_password= options'); when raw is not a URL at all, as it is.
func redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		user := authority[:i]
		if j := strings.IndexByte(user, ':'); j >= 0 {
			user = user[:j+1] + "xxxxx"
		} else {
			// go-redis reads redis://NAME@HOST as a user name, but people write passwords there too.
			user = "xxxxx"
		}
		authority = user + authority[i:]
	}
	if path, query, ok := strings.Cut(tail, "?"); ok {
		params := strings.Split(query, "&")
		for i, p := range params {
			k, _, _ := strings.Cut(p, "=")
			if k == "password" || k == "sentinel_password" {
				params[i] = k + "=xxxxx"
			}
		}
		tail = path + "?" + strings.Join(params, "&")
	}
	return scheme + "://" + authority + tail
}
