package swarmtest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Context makes a docker build context in a temporary directory: each
// file of files (path in the image -> path on this machine) copied under
// rootfs/, with the shared libraries an executable links (read from ldd)
// beside it, so a FROM scratch image runs it (an empty source makes an
// empty directory); and the Dockerfile, which
// should COPY rootfs/ /.
func Context(t testing.TB, dockerfile string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	for dst, src := range files {
		if src == "" {
			if err := os.MkdirAll(filepath.Join(root, dst), 0o1777); err != nil {
				t.Fatal(err)
			}
			continue
		}
		copyFile(t, src, filepath.Join(root, dst))
		for _, lib := range sharedLibs(src) {
			copyFile(t, lib, filepath.Join(root, lib))
		}
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// BuildImage builds the context dir as tag on every node at once (no
// registry: each engine builds its own copy).
func (s *Swarm) BuildImage(t testing.TB, tag, dir string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]string, len(s.Nodes))
	for i, n := range s.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := n.Docker("build", "-q", "-t", tag, dir); err != nil {
				errs[i] = fmt.Sprintf("%s: docker build %s: %v\n%s", n.Name, tag, err, out)
			}
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != "" {
			t.Fatal(e)
		}
	}
}

// sharedLibs lists the libraries ldd says bin needs, the loader included;
// none for a static binary.
func sharedLibs(bin string) []string {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil // "not a dynamic executable"
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		for _, w := range f {
			if strings.HasPrefix(w, "/") {
				libs = append(libs, w)
				break
			}
		}
	}
	return libs
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
