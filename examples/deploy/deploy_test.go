// Package deploy_test keeps the deployment material of examples/deploy
// true: the production configuration loads and passes `snorky check`
// against PostgreSQL set up with postgres-setup.sql (a least-privilege
// role), the server streams with it, the systemd unit verifies, and the
// Containerfile builds where a container builder runs.
package deploy_test

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
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/backendapi/handofftest"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(handofftest.Main(m)) }

// selfSigned writes a certificate and key for 127.0.0.1 and returns their
// paths.
func selfSigned(t *testing.T) (cert, key string) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return cert, key
}

// setUpDatabase creates a database with the tasks table (owned by the
// superuser, as an application's would be by its own role) and runs
// postgres-setup.sql with a role of the test's own; it returns the role's
// URL.
func setUpDatabase(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	dbURL := pgtest.NewDatabase(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	dbName := strings.TrimPrefix(u.Path, "/")
	var rnd [4]byte
	rand.Read(rnd[:])
	role := "snorky_deploy_" + strings.ToLower(strings.TrimLeft(big.NewInt(0).SetBytes(rnd[:]).Text(36), "0"))
	sql, err := os.ReadFile("postgres-setup.sql")
	if err != nil {
		t.Fatal(err)
	}
	script := strings.NewReplacer(
		"CREATE ROLE snorky ", "CREATE ROLE "+role+" ",
		"TO snorky;", "TO "+role+";",
		"DATABASE app ", "DATABASE "+pgx.Identifier{dbName}.Sanitize()+" ",
		":password", "'deploy-test-password'",
	).Replace(string(sql))
	admin, err := pgx.Connect(ctx, pgtest.AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	// Dropped after the database (cleanups run last-registered first).
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), pgtest.AdminURL(t))
		if err == nil {
			c.Exec(context.Background(), "DROP ROLE IF EXISTS "+role)
			c.Close(context.Background())
		}
	})
	db, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	if _, err := db.Exec(ctx, `CREATE TABLE tasks (id bigserial PRIMARY KEY, title text NOT NULL, completed bool NOT NULL DEFAULT false, owner_id int)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, script); err != nil {
		t.Fatalf("postgres-setup.sql: %v", err)
	}
	u.User = url.UserPassword(role, "deploy-test-password")
	return u.String()
}

// TestDeployConfig: the production configuration, with its secrets from
// the environment, passes `snorky check` against a database set up with
// postgres-setup.sql (a role with REPLICATION that owns no table), fails it
// naming the key without them, and `snorky serve` streams with it.
func TestDeployConfig(t *testing.T) {
	bin := handofftest.Binary(t)
	roleURL := setUpDatabase(t)
	cert, key := selfSigned(t)
	env := []string{
		"SNORKY_DATABASE__URL=" + roleURL,
		"SNORKY_BACKEND__API_KEY=deploy-test-key-0123456789abcdefghij",
		"SNORKY_TOKENS__SECRET=deploy-test-secret-0123456789abcdef",
		"SNORKY_FRONTEND__TLS__CERT_FILE=" + cert,
		"SNORKY_FRONTEND__TLS__KEY_FILE=" + key,
	}
	run := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = handofftest.Env(env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run(env, "check", "--config", "snorky.yaml")
	if err != nil || !strings.Contains(out, "ok:") {
		t.Fatalf("snorky check: %v\n%s", err, out)
	}
	out, err = run(env[:1], "check", "--config", "snorky.yaml")
	if err == nil || !strings.Contains(out, "SNORKY_TOKENS__SECRET") {
		t.Errorf("snorky check without the secrets: got %v %s, want a failure naming SNORKY_TOKENS__SECRET", err, out)
	}

	front, back := handofftest.FreeAddr(t), handofftest.FreeAddr(t)
	cmd := exec.Command(bin, "serve", "--config", "snorky.yaml")
	cmd.Env = handofftest.Env(append(env, "SNORKY_FRONTEND__LISTEN="+front, "SNORKY_BACKEND__LISTEN="+back)...)
	p := handofftest.StartProcess(t, cmd)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + back + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("snorky serve with the deployment config: not ready after 60s:\n%s", p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSystemdUnit verifies snorky.service with systemd-analyze (with the
// unit's paths pointed at a built binary).
func TestSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not found (apt-get install systemd): the unit was not verified")
	}
	unit, err := os.ReadFile("snorky.service")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer("/usr/local/bin/snorky", handofftest.Binary(t), "EnvironmentFile=/", "EnvironmentFile=-/").Replace(string(unit))
	path := filepath.Join(t.TempDir(), "snorky.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, analyze, "verify", path)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || strings.TrimSpace(stderr.String()) != "" {
		t.Fatalf("systemd-analyze verify snorky.service: %v\n%s", err, stderr.String())
	}
}

// TestContainerfile builds the image with podman, docker or buildah when
// one can (a daemon running, for docker); otherwise it skips and says why.
func TestContainerfile(t *testing.T) {
	var tool string
	var why []string
	for _, name := range []string{"podman", "buildah", "docker"} {
		path, err := exec.LookPath(name)
		if err != nil {
			why = append(why, name+" not installed")
			continue
		}
		if name == "docker" {
			if out, err := exec.Command(path, "info").CombinedOutput(); err != nil {
				why = append(why, "docker is installed but its daemon is not reachable ("+strings.TrimSpace(lastLine(string(out)))+")")
				continue
			}
		}
		tool = path
		break
	}
	if tool == "" {
		t.Skipf("no container builder: %s; the Containerfile was not built", strings.Join(why, "; "))
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	args := []string{"build", "-f", filepath.Join(root, "examples", "deploy", "Containerfile"), "-t", "snorky-deploy-test", root}
	if filepath.Base(tool) == "buildah" {
		args[0] = "bud"
	}
	out, err := exec.CommandContext(ctx, tool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s build: %v\n%s", filepath.Base(tool), err, out)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
