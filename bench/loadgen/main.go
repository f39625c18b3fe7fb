// Command loadgen drives a TLS server on loopback and prints one JSON result.
//
// It is the load generator of the servers benchmark (bench/servers.ts): not a
// Node process, so that the server under test, not the client, saturates
// first. Standard library only (builds with Go 1.19, Debian's golang-go).
//
//	loadgen -addr 127.0.0.1:PORT -mode bulk|echo|full|resumed|memory -ca ca.pem [-duration 2s] ...
//
// Workloads (the server's side in brackets):
//
//	bulk     one conn per -conns (default 1) sends -size (256 KiB) writes for
//	         -duration, then half-closes (close_notify + FIN) and reads the byte
//	         count the server answers [sink: read to EOF, answer "<n>\n", close].
//	         Rate: bytes the server confirmed / elapsed, in MB/s (10^6 bytes).
//	echo     -conns (64) conns, each a loop of a -size (64 B) write and the read
//	         of its echo, for -duration [echo]. Rate: round trips/s.
//	full     -conns (8) workers, each a loop of: dial, TLS handshake with no
//	         session cache, one -size (64 B) round trip, close [echo]. Rate:
//	         handshakes/s.
//	resumed  as full, with a tls.ClientSessionCache of one entry per worker, so
//	         every handshake after a worker's first offers the newest ticket
//	         that worker got: a fresh one from servers that send a ticket on
//	         every conn (single-use tickets work), else the previous one again.
//	         The round trip also reads the TLS 1.3 tickets, which come after the
//	         handshake. Rate: handshakes/s; "resumed" counts the resumed ones.
//	memory   idle conns, in steps the caller paces through stdin and stdout
//	         (bench/servers.ts reads the server's memory between them) [echo]:
//	         one warm-up conn (handshake, one -size (64 B) round trip, close),
//	         then the line {"phase":"warm"}; on a line from stdin, -conns (4000)
//	         conns opened by 16 dialers, each with one round trip, all kept
//	         open and idle, then {"phase":"held","conns":N}; on the next line
//	         (or stdin's EOF) all are closed and the result printed. The soft
//	         limit on open files is raised to the hard one, and -conns capped
//	         below it (the result's "note" says so). Rate: conns/s opened.
//
// The server's certificate is checked with -ca (chain verification, as a real
// client does) or with -pin (the leaf must be exactly this certificate; no
// chain verification, so the load generator spends less CPU per handshake and
// has more left to saturate the server). The server's CertificateVerify
// signature is checked either way.
//
// Every run is bounded: by -duration, by -max operations if given, and by a
// watchdog at duration + -timeout that exits with an error.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type result struct {
	OK         bool    `json:"ok"`
	Mode       string  `json:"mode"`
	Addr       string  `json:"addr"`
	Conns      int     `json:"conns"`
	Size       int     `json:"size"`
	Ops        int64   `json:"ops"`
	Bytes      int64   `json:"bytes"`
	ElapsedS   float64 `json:"elapsed_s"`
	Rate       float64 `json:"rate"`
	Unit       string  `json:"unit"`
	Resumed    int64   `json:"resumed"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Version    string  `json:"version,omitempty"`
	Cipher     string  `json:"cipher,omitempty"`
	CPUS       float64 `json:"cpu_s"`
	Note       string  `json:"note,omitempty"`
}

type run struct {
	addr     string
	cfg      *tls.Config
	conns    int
	size     int
	duration time.Duration
	max      int64
	ioTO     time.Duration
	resume   bool

	stop    int32 // atomic: 1 once the duration or -max is reached
	ops     int64 // atomic
	sent    int64 // atomic: bulk bytes written, for -max
	bytes   int64 // atomic: bulk bytes the server confirmed
	resumed int64 // atomic
	errs    int64 // atomic

	mu       sync.Mutex
	firstErr string
	version  string
	cipher   string
}

func (r *run) stopped() bool { return atomic.LoadInt32(&r.stop) != 0 }

func (r *run) fail(err error) {
	atomic.AddInt64(&r.errs, 1)
	r.mu.Lock()
	if r.firstErr == "" {
		r.firstErr = err.Error()
	}
	r.mu.Unlock()
}

func (r *run) sample(c *tls.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.version != "" {
		return
	}
	st := c.ConnectionState()
	switch st.Version {
	case tls.VersionTLS13:
		r.version = "TLSv1.3"
	case tls.VersionTLS12:
		r.version = "TLSv1.2"
	default:
		r.version = fmt.Sprintf("0x%04x", st.Version)
	}
	r.cipher = tls.CipherSuiteName(st.CipherSuite)
}

// count adds n operations and raises the stop flag when -max is reached.
func (r *run) count(n int64) {
	if v := atomic.AddInt64(&r.ops, n); r.max > 0 && v >= r.max {
		atomic.StoreInt32(&r.stop, 1)
	}
}

func (r *run) dial() (*tls.Conn, error) {
	return r.dialWith(r.cfg)
}

func (r *run) dialWith(cfg *tls.Config) (*tls.Conn, error) {
	raw, err := net.DialTimeout("tcp", r.addr, r.ioTO)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, cfg)
	_ = c.SetDeadline(time.Now().Add(r.ioTO))
	if err := c.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	r.sample(c)
	return c, nil
}

// connectAll opens n TLS conns before the clock starts.
func (r *run) connectAll(n int) ([]*tls.Conn, error) {
	conns := make([]*tls.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := r.dial()
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func closeWrite(c *tls.Conn) error {
	if err := c.CloseWrite(); err != nil { // close_notify
		return err
	}
	if tc, ok := c.NetConn().(*net.TCPConn); ok {
		return tc.CloseWrite() // and a FIN, for servers that only watch the socket
	}
	return nil
}

func (r *run) bulk() (time.Duration, error) {
	conns, err := r.connectAll(r.conns)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, r.size)
	for i := range buf {
		buf[i] = byte(i*7 + i>>8)
	}
	start := time.Now()
	timer := time.AfterFunc(r.duration, func() { atomic.StoreInt32(&r.stop, 1) })
	defer timer.Stop()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func(c *tls.Conn) {
			defer wg.Done()
			defer c.Close()
			var sent int64
			_ = c.SetDeadline(time.Now().Add(r.duration + r.ioTO))
			for !r.stopped() {
				if _, err := c.Write(buf); err != nil {
					r.fail(fmt.Errorf("write: %w", err))
					return
				}
				sent += int64(len(buf))
				if r.max > 0 && atomic.AddInt64(&r.sent, int64(len(buf))) >= r.max {
					atomic.StoreInt32(&r.stop, 1)
				}
			}
			if err := closeWrite(c); err != nil {
				r.fail(fmt.Errorf("close write: %w", err))
				return
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil && !(errors.Is(err, io.EOF) && line != "") {
				r.fail(fmt.Errorf("reading the byte count: %w", err))
				return
			}
			got, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
			if err != nil || got != sent {
				r.fail(fmt.Errorf("server counted %q, sent %d", strings.TrimSpace(line), sent))
				return
			}
			// Only bytes the server confirmed count.
			atomic.AddInt64(&r.bytes, sent)
			atomic.AddInt64(&r.ops, 1)
		}(c)
	}
	wg.Wait()
	return time.Since(start), nil
}

func (r *run) echo() (time.Duration, error) {
	conns, err := r.connectAll(r.conns)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	timer := time.AfterFunc(r.duration, func() { atomic.StoreInt32(&r.stop, 1) })
	defer timer.Stop()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func(i int, c *tls.Conn) {
			defer wg.Done()
			defer c.Close()
			msg := make([]byte, r.size)
			for j := range msg {
				msg[j] = byte(i + j)
			}
			in := make([]byte, r.size)
			_ = c.SetDeadline(time.Now().Add(r.duration + r.ioTO))
			var n int64
			for !r.stopped() {
				if _, err := c.Write(msg); err != nil {
					r.fail(fmt.Errorf("write: %w", err))
					break
				}
				if _, err := io.ReadFull(c, in); err != nil {
					r.fail(fmt.Errorf("read: %w", err))
					break
				}
				n++
				if r.max > 0 && n%64 == 0 {
					r.count(64)
					n = 0
				}
			}
			r.count(n)
		}(i, c)
	}
	wg.Wait()
	return time.Since(start), nil
}

func (r *run) handshakes() (time.Duration, error) {
	// One handshake first: a server that is not there fails the run at once.
	c, err := r.dial()
	if err != nil {
		return 0, err
	}
	c.Close()
	start := time.Now()
	timer := time.AfterFunc(r.duration, func() { atomic.StoreInt32(&r.stop, 1) })
	defer timer.Stop()
	var wg sync.WaitGroup
	for w := 0; w < r.conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := r.cfg
			if r.resume {
				cfg = r.cfg.Clone()
				cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
			msg := make([]byte, r.size)
			in := make([]byte, r.size)
			for !r.stopped() {
				c, err := r.dialWith(cfg)
				if err != nil {
					r.fail(fmt.Errorf("handshake: %w", err))
					if atomic.LoadInt64(&r.errs) > 100 {
						atomic.StoreInt32(&r.stop, 1)
					}
					continue
				}
				resumed := c.ConnectionState().DidResume
				_, err = c.Write(msg)
				if err == nil {
					_, err = io.ReadFull(c, in)
				}
				c.Close()
				if err != nil {
					r.fail(fmt.Errorf("round trip: %w", err))
					continue
				}
				if resumed {
					atomic.AddInt64(&r.resumed, 1)
				}
				r.count(1)
			}
		}()
	}
	wg.Wait()
	return time.Since(start), nil
}

// raiseNoFile raises the soft limit on open files to the hard one; returns the soft limit.
func raiseNoFile() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 1024
	}
	if lim.Cur < lim.Max {
		want := lim
		want.Cur = want.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) == nil {
			lim = want
		}
	}
	return lim.Cur
}

// roundTrip writes one message and reads its echo.
func (r *run) roundTrip(c *tls.Conn, msg, in []byte) error {
	_ = c.SetDeadline(time.Now().Add(r.ioTO))
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if _, err := io.ReadFull(c, in); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if !bytes.Equal(msg, in) {
		return errors.New("the echo differs from what was sent")
	}
	return c.SetDeadline(time.Time{})
}

// memory: see the package comment. step prints a phase line and waits for the
// caller's next line (false: stdin ended or the wait timed out).
func (r *run) memory(step func(phase string, conns int) bool) (time.Duration, error) {
	msg := make([]byte, r.size)
	for j := range msg {
		msg[j] = byte(j)
	}
	in := make([]byte, r.size)
	c, err := r.dial()
	if err != nil {
		return 0, err
	}
	err = r.roundTrip(c, msg, in)
	c.Close()
	if err != nil {
		return 0, fmt.Errorf("warm-up: %w", err)
	}
	if !step("warm", 0) {
		return 0, errors.New("no go-ahead on stdin after the warm-up")
	}
	conns := make([]*tls.Conn, r.conns)
	var next int64 = -1
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := append([]byte(nil), msg...)
			in := make([]byte, r.size)
			for {
				i := atomic.AddInt64(&next, 1)
				if i >= int64(len(conns)) || atomic.LoadInt64(&r.errs) > 0 {
					return
				}
				c, err := r.dial()
				if err != nil {
					r.fail(fmt.Errorf("conn %d: handshake: %w", i, err))
					return
				}
				conns[i] = c
				if err := r.roundTrip(c, msg, in); err != nil {
					r.fail(fmt.Errorf("conn %d: %w", i, err))
					return
				}
				r.count(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if atomic.LoadInt64(&r.errs) > 0 {
		return elapsed, nil
	}
	if !step("held", int(atomic.LoadInt64(&r.ops))) {
		return elapsed, errors.New("no go-ahead on stdin while holding the conns")
	}
	return elapsed, nil
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func main() {
	addr := flag.String("addr", "", "server address, host:port (loopback only)")
	mode := flag.String("mode", "", "bulk | echo | full | resumed | memory")
	caFile := flag.String("ca", "", "PEM file with the CA that signed the server's certificate")
	pinFile := flag.String("pin", "", "PEM file with the server's exact leaf certificate (instead of -ca)")
	serverName := flag.String("servername", "localhost", "TLS server name (SNI and verification)")
	duration := flag.Duration("duration", 2*time.Second, "how long to drive the server")
	conns := flag.Int("conns", 0, "conns (bulk: 1, echo: 64, memory: 4000) or handshakes in flight (full/resumed: 8)")
	size := flag.Int("size", 0, "write size (bulk: 262144) or message size (others: 64)")
	max := flag.Int64("max", 0, "stop after this many operations (bulk: bytes); 0: no limit")
	timeout := flag.Duration("timeout", 20*time.Second, "I/O time limit past -duration")
	flag.Parse()

	res := result{Mode: *mode, Addr: *addr}
	out := func(code int) {
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
		os.Exit(code)
	}
	die := func(err error) {
		res.OK = false
		res.FirstError = err.Error()
		out(1)
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		die(fmt.Errorf("-addr: %w", err))
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		die(fmt.Errorf("-addr %s: only loopback addresses are allowed", *addr))
	}
	defaults := map[string][2]int{
		"bulk": {1, 256 << 10}, "echo": {64, 64}, "full": {8, 64}, "resumed": {8, 64},
		"memory": {4000, 64},
	}
	def, ok := defaults[*mode]
	if !ok {
		die(fmt.Errorf("-mode must be bulk, echo, full, resumed or memory, not %q", *mode))
	}
	if *conns <= 0 {
		*conns = def[0]
	}
	if *size <= 0 {
		*size = def[1]
	}
	if *mode == "memory" {
		// Each conn is one fd here; keep some for the runtime and stdio.
		if soft := raiseNoFile(); uint64(*conns) > soft-64 {
			res.Note = fmt.Sprintf("-conns %d capped to %d: the open files limit is %d", *conns, soft-64, soft)
			*conns = int(soft - 64)
		}
	}
	res.Conns, res.Size = *conns, *size
	cfg := &tls.Config{
		ServerName: *serverName,
		MinVersion: tls.VersionTLS13,
		// One key exchange for every server, whatever else they support.
		CurvePreferences: []tls.CurveID{tls.X25519},
	}
	switch {
	case *pinFile != "":
		data, err := os.ReadFile(*pinFile)
		if err != nil {
			die(fmt.Errorf("-pin: %w", err))
		}
		block, _ := pem.Decode(data)
		if block == nil || block.Type != "CERTIFICATE" {
			die(fmt.Errorf("-pin %s: no certificate", *pinFile))
		}
		want := block.Bytes
		cfg.InsecureSkipVerify = true // replaced by the exact match below
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], want) {
				return errors.New("the server's certificate is not the pinned one")
			}
			return nil
		}
	case *caFile != "":
		data, err := os.ReadFile(*caFile)
		if err != nil {
			die(fmt.Errorf("-ca: %w", err))
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(data) {
			die(fmt.Errorf("-ca %s: no certificate", *caFile))
		}
		cfg.RootCAs = roots
	default:
		die(errors.New("-ca or -pin is required"))
	}
	if *mode != "resumed" {
		cfg.SessionTicketsDisabled = true // and the server is told not to send tickets
	}

	// Watchdog: whatever happens, this process ends.
	limit := *duration + *timeout + 5*time.Second
	if *mode == "memory" {
		// Opening the conns, and two waits for the caller of at most -timeout each.
		limit = 3**timeout + 5*time.Second + time.Duration(*conns)*5*time.Millisecond
	}
	time.AfterFunc(limit, func() {
		die(errors.New("watchdog: the run did not finish in time"))
	})

	r := &run{addr: *addr, cfg: cfg, conns: *conns, size: *size, duration: *duration, max: *max, ioTO: *timeout, resume: *mode == "resumed"}
	cpu0 := cpuSeconds()
	var elapsed time.Duration
	switch *mode {
	case "bulk":
		elapsed, err = r.bulk()
	case "echo":
		elapsed, err = r.echo()
	case "memory":
		lines := make(chan bool)
		go func() {
			sc := bufio.NewScanner(os.Stdin)
			for sc.Scan() {
				lines <- true
			}
			close(lines)
		}()
		elapsed, err = r.memory(func(phase string, n int) bool {
			b, _ := json.Marshal(map[string]interface{}{"phase": phase, "conns": n})
			fmt.Println(string(b))
			select {
			case _, ok := <-lines:
				return ok || phase == "held" // held: stdin's EOF also says "close them"
			case <-time.After(*timeout):
				return false
			}
		})
	default:
		elapsed, err = r.handshakes()
	}
	res.CPUS = cpuSeconds() - cpu0
	if err != nil {
		die(err)
	}
	res.ElapsedS = elapsed.Seconds()
	res.Ops = atomic.LoadInt64(&r.ops)
	res.Resumed = atomic.LoadInt64(&r.resumed)
	res.Errors = atomic.LoadInt64(&r.errs)
	res.FirstError = r.firstErr
	res.Version, res.Cipher = r.version, r.cipher
	switch *mode {
	case "bulk":
		res.Unit = "MB/s"
		// Ops counts the conns whose bytes the server confirmed.
		res.Bytes = atomic.LoadInt64(&r.bytes)
		res.Rate = float64(res.Bytes) / 1e6 / res.ElapsedS
	case "echo":
		res.Unit = "rt/s"
		res.Rate = float64(res.Ops) / res.ElapsedS
	case "memory":
		res.Unit = "conns/s"
		res.Rate = float64(res.Ops) / res.ElapsedS
	default:
		res.Unit = "hs/s"
		res.Rate = float64(res.Ops) / res.ElapsedS
	}
	res.OK = res.Errors == 0 && res.Ops > 0
	if res.OK {
		out(0)
	}
	out(1)
}
