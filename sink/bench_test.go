package sink

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"
	"gopkg.in/yaml.v3"

	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/scrape/simulator"
	"github.com/scrapeflux/scrapeflux/sink/schema"
)

// BenchmarkParseConvert measures parse + convert + encode per capture and
// layout in steady state: one parser and one converter reused across
// scrapes, as a target's loop does. Reports ns, bytes and allocations per
// sample.
func BenchmarkParseConvert(b *testing.B) {
	for _, name := range simulator.CaptureNames() {
		body := simulator.Captures()[name]
		for _, layout := range []Layout{LayoutV1, LayoutV2} {
			b.Run(fmt.Sprintf("%s/v%d", name, layout), func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				benchSteadyState(b, ConvertOptions{Layout: layout, Measurement: DefaultMeasurement}, scrape.AppendOptions{}, body)
			})
		}
	}
}

// benchSteadyState parses and converts body b.N times with one parser and
// one converter, as a target's loop does, and reports the cost per sample.
func benchSteadyState(b *testing.B, conv ConvertOptions, app scrape.AppendOptions, body []byte) {
	s, err := New(conv.config(), &fakeWriter{}, discard)
	if err != nil {
		b.Fatal(err)
	}
	c := s.Appender(testTarget(), app).(*converter)
	c.emit = func(ch *chunk) error { s.chunks.Put(ch); return nil }
	p := scrape.NewParser()
	samples := 0
	b.ReportAllocs()
	b.ResetTimer()
	mem := memBefore()
	for i := 0; i < b.N; i++ {
		n, _, err := p.Parse(body, "text/plain; version=0.0.4", 1700000000000+int64(i), false, c)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Commit(); err != nil {
			b.Fatal(err)
		}
		samples += n
	}
	b.StopTimer()
	reportPerSample(b, samples, mem)
}

// BenchmarkParseConvertAll runs every capture in turn, each with its own
// parser and converter (as separate targets), and reports the cost per
// sample over all of them: the figure to compare with textparse alone.
// Each body is copied into a buffer first, as a fetch writes it, and
// parsed as a loop's parser does (HELP lines next to their TYPE dropped).
func BenchmarkParseConvertAll(b *testing.B) {
	for _, layout := range []Layout{LayoutV1, LayoutV2} {
		b.Run(fmt.Sprintf("v%d", layout), func(b *testing.B) {
			s, err := New(ConvertOptions{Layout: layout, Measurement: DefaultMeasurement}.config(), &fakeWriter{}, discard)
			if err != nil {
				b.Fatal(err)
			}
			type target struct {
				body []byte
				p    *scrape.Parser
				c    *converter
			}
			var ts []target
			for _, body := range simulator.Captures() {
				tg := testTarget()
				c := s.Appender(tg, scrape.AppendOptions{}).(*converter)
				c.emit = func(ch *chunk) error { s.chunks.Put(ch); return nil }
				p := scrape.NewParser()
				p.DropHelp = true // as a loop's parser: the body is a fetch buffer
				ts = append(ts, target{body, p, c})
			}
			var buf []byte
			samples := 0
			b.ReportAllocs()
			b.ResetTimer()
			mem := memBefore()
			for i := 0; i < b.N; i++ {
				for _, t := range ts {
					buf = append(buf[:0], t.body...) // as the fetch writes it
					n, _, err := t.p.Parse(buf, "text/plain; version=0.0.4", 1700000000000+int64(i), false, t.c)
					if err != nil {
						b.Fatal(err)
					}
					if err := t.c.Commit(); err != nil {
						b.Fatal(err)
					}
					samples += n
				}
			}
			b.StopTimer()
			reportPerSample(b, samples, mem)
		})
	}
}

// memBefore reads the allocation counters at the start of the timed loop.
func memBefore() runtime.MemStats {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

func reportPerSample(b *testing.B, samples int, before runtime.MemStats) {
	if samples == 0 {
		return
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	n := float64(samples)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/sample")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/n, "B/sample")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/n, "allocs/sample")
	b.ReportMetric(n/float64(b.N), "samples/op")
}

// BenchmarkParseConvertRelabel is BenchmarkParseConvert on the Docker
// engine capture with metric relabeling: none, rules that only keep or
// drop, and rules that rewrite every series (a tag added, one dropped).
// Rewrites are decided once per series and their line keys reused, so
// all three cost about the same per sample in steady state.
func BenchmarkParseConvertRelabel(b *testing.B) {
	body := simulator.Captures()["docker-engine-18.09.3-ce-swarm-manager"]
	rules := map[string]string{
		"none":    "",
		"keep":    "- source_labels: [__name__]\n  regex: go_memstats_.*\n  action: drop\n",
		"rewrite": "- target_label: env\n  replacement: prod\n- regex: state\n  action: labeldrop\n",
	}
	for _, name := range []string{"none", "keep", "rewrite"} {
		var cfgs []*relabel.Config
		if err := yaml.Unmarshal([]byte(rules[name]), &cfgs); err != nil {
			b.Fatal(err)
		}
		for _, c := range cfgs {
			if err := c.Validate(model.UTF8Validation); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(name, func(b *testing.B) {
			benchSteadyState(b, ConvertOptions{Layout: LayoutV1}, scrape.AppendOptions{MetricRelabelConfigs: cfgs}, body)
		})
	}
}

// BenchmarkLineIndex compares the scrape's line index with a plain map
// over the same work: a scrape of 1,000 lines, each looked up twice (a
// line and a later sample of the same line), then emptied. The index is
// kept because it wins here (and in BenchmarkParseConvert).
func BenchmarkLineIndex(b *testing.B) {
	hashes := make([]uint64, 1000)
	for i := range hashes {
		hashes[i] = maphash.Bytes(hashSeed, []byte(fmt.Sprintf("engine_daemon_container_actions_seconds,action=a%d,instance=10.0.0.1:9323,job=docker", i)))
	}
	b.Run("lineIndex", func(b *testing.B) {
		var x lineIndex
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			for pass := 0; pass < 2; pass++ {
				for l, h := range hashes {
					if f := x.slot(h); !f.used {
						x.set(f, int32(l))
					}
				}
			}
			x.reset()
		}
	})
	b.Run("map", func(b *testing.B) {
		m := map[uint64]int32{}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			for pass := 0; pass < 2; pass++ {
				for l, h := range hashes {
					if _, ok := m[h]; !ok {
						m[h] = int32(l)
					}
				}
			}
			clear(m)
		}
	})
}

// BenchmarkWriteCompression compresses a write request of real line
// protocol (every capture converted, about 10,000 lines) at the gzip
// levels klauspost/compress offers for speed, and reports the bytes kept
// per 100 bytes of line protocol: the figures behind --influx-gzip's
// level.
func BenchmarkWriteCompression(b *testing.B) {
	var body []byte
	for len(body) < 1<<20 {
		for _, name := range simulator.CaptureNames() {
			s, err := New(ConvertOptions{Layout: LayoutV1}.config(), &fakeWriter{}, discard)
			if err != nil {
				b.Fatal(err)
			}
			c := s.Appender(testTarget(), scrape.AppendOptions{}).(*converter)
			c.emit = func(ch *chunk) error { body = append(body, ch.buf...); return nil }
			if _, _, err := scrape.NewParser().Parse(simulator.Captures()[name], "text/plain", 1700000000000+int64(len(body)), false, c); err != nil {
				b.Fatal(err)
			}
			c.Commit()
		}
	}
	for _, lv := range []struct {
		name  string
		level int
	}{{"BestSpeed", gzip.BestSpeed}, {"Level2", 2}, {"HuffmanOnly", gzip.HuffmanOnly}, {"Stateless", gzip.StatelessCompression}} {
		b.Run(lv.name, func(b *testing.B) {
			var out bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&out, lv.level)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				out.Reset()
				zw.Reset(&out)
				zw.Write(body)
				zw.Close()
			}
			b.ReportMetric(100*float64(out.Len())/float64(len(body)), "bytes_per_100")
		})
	}
}

// discardWriter takes every write and keeps nothing; gz says whether it
// takes gzip'd bodies (as InfluxWriter with InfluxConfig.Gzip).
type discardWriter struct{ gz bool }

func (discardWriter) Write(context.Context, []byte) error           { return nil }
func (d discardWriter) Compresses() bool                            { return d.gz }
func (discardWriter) WriteCompressed(context.Context, []byte) error { return nil }

// BenchmarkSinkBatching measures what the sink spends per sample after
// conversion, with the shipped queue settings (every batch written to the
// disk queue): batching, compression when on, the disk append, the writer
// and acknowledgement, in CPU time of the process (every goroutine).
// Each op is one committed scrape of the docker-engine capture's lines.
func BenchmarkSinkBatching(b *testing.B) {
	// Scrapes of several targets at several times, as a batch holds them.
	var scrapes [][]byte
	var nLines, nSamples int
	s0, err := New(ConvertOptions{Layout: LayoutV1}.config(), &fakeWriter{}, discard)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 16; i++ {
		c := s0.Appender([]scrape.Tag{{Key: "instance", Value: fmt.Sprintf("10.0.0.%d:9323", i)}, {Key: "job", Value: "docker"}}, scrape.AppendOptions{}).(*converter)
		c.emit = func(ch *chunk) error {
			scrapes, nLines, nSamples = append(scrapes, bytes.Clone(ch.buf)), ch.lines, ch.samples
			return nil
		}
		if _, _, err := scrape.NewParser().Parse(simulator.Captures()["docker-engine-18.09.3-ce"], "text/plain", 1700000000000+int64(i)*1237, false, c); err != nil {
			b.Fatal(err)
		}
		c.Commit()
	}
	for _, gz := range []bool{true, false} {
		b.Run(fmt.Sprintf("gzip=%v", gz), func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.QueueDir = b.TempDir()
			s, err := New(cfg, discardWriter{gz: gz}, discard)
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan error)
			go func() { done <- s.Run(context.Background()) }()
			b.SetBytes(int64(len(scrapes[0])))
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				ch := s.getChunk()
				ch.buf = append(ch.buf, scrapes[i%len(scrapes)]...)
				ch.lines, ch.samples = nLines, nSamples
				if err := s.put(ch); err != nil {
					b.Fatal(err)
				}
			}
			// Close seals the last batch at once and Run returns when
			// everything is written.
			s.Close()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if w := s.Stats().Written; w != int64(b.N*nSamples) {
				b.Fatalf("written %d of %d samples", w, b.N*nSamples)
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*nSamples), "cpu-ns/sample")
		})
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRelabelDecisionMemory measures the heap a target's relabel
// decisions hold per series (100,000 series, parsed and committed once):
// rules that only keep, and rules that rewrite every series (its line key
// kept in the target's arena too). It is what releasing the decisions
// frees, so the parser's and the sink's own buffers are not counted.
func BenchmarkRelabelDecisionMemory(b *testing.B) {
	const series = 100_000
	var body []byte
	for j := 0; j < series; j++ {
		body = fmt.Appendf(body, "engine_daemon_events_total{container=\"c%06d\",node=\"swarm1\"} %d\n", j, j)
	}
	rules := map[string]string{
		"keep":    "- source_labels: [__name__]\n  regex: go_memstats_.*\n  action: drop\n",
		"rewrite": "- target_label: env\n  replacement: prod\n",
	}
	for _, name := range []string{"keep", "rewrite"} {
		var cfgs []*relabel.Config
		if err := yaml.Unmarshal([]byte(rules[name]), &cfgs); err != nil {
			b.Fatal(err)
		}
		for _, c := range cfgs {
			if err := c.Validate(model.UTF8Validation); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(name, func(b *testing.B) {
			s, err := New(ConvertOptions{Layout: LayoutV1}.config(), &fakeWriter{}, discard)
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; i < b.N; i++ {
				c := s.Appender(testTarget(), scrape.AppendOptions{MetricRelabelConfigs: cfgs}).(*converter)
				c.emit = func(ch *chunk) error { s.chunks.Put(ch); return nil }
				if _, _, err := scrape.NewParser().Parse(body, "text/plain; version=0.0.4", 1700000000000, false, c); err != nil {
					b.Fatal(err)
				}
				if err := c.Commit(); err != nil {
					b.Fatal(err)
				}
				if len(c.decisions) != series {
					b.Fatalf("%d decisions for %d series", len(c.decisions), series)
				}
				var held, freed runtime.MemStats
				runtime.GC()
				runtime.GC() // the scratch pools' victims go at the second
				runtime.ReadMemStats(&held)
				c.decisions, c.arena = nil, nil
				runtime.GC()
				runtime.ReadMemStats(&freed)
				b.ReportMetric(float64(held.HeapAlloc-freed.HeapAlloc)/series, "B/series")
				runtime.KeepAlive(c)
			}
		})
	}
}

// BenchmarkSchemaGuard is BenchmarkParseConvertAll (layout v1) with the
// InfluxDB 3 schema guard off and on, its catalog holding 2,000 tables
// of 500 columns (Enterprise's limits raised to 4,000 tables so the
// captures' own tables fit too). steady: a target's scrapes keep their
// shape, as they do (one hash of the scrape's keys); every-line: the
// guard learns something before every scrape, so each line is looked up
// by its shape (the worst case). Reports ns/sample and the catalog's
// heap per column (B/column).
func BenchmarkSchemaGuard(b *testing.B) {
	for _, mode := range []string{"off", "steady", "every-line"} {
		b.Run(mode, func(b *testing.B) {
			var perColumn float64
			s, err := New(ConvertOptions{Layout: LayoutV1}.config(), &fakeWriter{}, discard)
			if err != nil {
				b.Fatal(err)
			}
			if mode != "off" {
				runtime.GC()
				before := memBefore()
				cat := schema.NewCatalog(schema.Limits{Tables: 4000})
				cat.Activate("Enterprise")
				tables := map[string][]string{}
				for t := 0; t < 2000; t++ {
					cols := make([]string, 499)
					for c := range cols {
						cols[c] = fmt.Sprintf("column_%d", c)
					}
					tables[fmt.Sprintf("table_%d", t)] = cols
				}
				db := cat.Database("db")
				db.Known(tables, func(n string) []byte { return []byte(n) }, func(n string) []byte { return []byte(n) })
				tables = nil
				runtime.GC()
				after := memBefore()
				perColumn = float64(after.HeapAlloc-before.HeapAlloc) / (2000 * 500)
				s.cfg.Schema, s.schema = cat, db
			}
			type target struct {
				body []byte
				p    *scrape.Parser
				c    *converter
			}
			var ts []target
			for _, body := range simulator.Captures() {
				c := s.Appender(testTarget(), scrape.AppendOptions{}).(*converter)
				c.emit = func(ch *chunk) error { s.chunks.Put(ch); return nil }
				p := scrape.NewParser()
				p.DropHelp = true
				ts = append(ts, target{body, p, c})
			}
			var buf []byte
			samples := 0
			b.ReportAllocs()
			b.ResetTimer()
			mem := memBefore()
			for i := 0; i < b.N; i++ {
				for _, t := range ts {
					if mode == "every-line" {
						t.c.shapeEpoch-- // as if the guard had learnt something
					}
					buf = append(buf[:0], t.body...)
					n, _, err := t.p.Parse(buf, "text/plain; version=0.0.4", 1700000000000+int64(i), false, t.c)
					if err != nil {
						b.Fatal(err)
					}
					if err := t.c.Commit(); err != nil {
						b.Fatal(err)
					}
					samples += n
				}
			}
			b.StopTimer()
			reportPerSample(b, samples, mem)
			if perColumn > 0 {
				b.ReportMetric(perColumn, "B/column")
			}
			if st := s.Stats(); st.Dropped["schema_limit"] != 0 {
				b.Fatalf("%d samples held", st.Dropped["schema_limit"])
			}
		})
	}
}
