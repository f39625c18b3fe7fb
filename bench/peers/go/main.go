// Command goserver is the Go crypto/tls peer of the servers benchmark
// (bench/servers.ts), written the idiomatic way: a goroutine per conn,
// io.Copy. With -plain it serves plaintext TCP instead: the backend behind the
// TLS-terminating proxies of bench/proxies.ts.
//
//	goserver -mode sink|echo -cert cert.pem -key key.pem
//	goserver -mode sink|echo -plain
//
// It listens on 127.0.0.1 on a free port, prints {"port":N} on stdout, and
// exits when its standard input closes (the benchmark went away) or after
// -lifetime.
//
//	sink  read to EOF, answer the byte count as "<n>\n", close.
//	echo  echo everything back.
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"time"
)

func main() {
	mode := flag.String("mode", "", "sink | echo")
	certFile := flag.String("cert", "", "certificate chain, PEM")
	keyFile := flag.String("key", "", "private key, PEM")
	plain := flag.Bool("plain", false, "plaintext TCP, no TLS (no -cert, -key)")
	lifetime := flag.Duration("lifetime", 30*time.Minute, "exit after this long whatever happens")
	flag.Parse()
	if *mode != "sink" && *mode != "echo" {
		log.Fatalf("-mode must be sink or echo, not %q", *mode)
	}
	var ln net.Listener
	var err error
	if *plain {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	} else {
		var cert tls.Certificate
		cert, err = tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Fatal(err)
		}
		ln, err = tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	}
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	time.AfterFunc(*lifetime, func() { os.Exit(0) })
	b, _ := json.Marshal(map[string]int{"port": ln.Addr().(*net.TCPAddr).Port})
	fmt.Println(string(b))
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go handle(c, *mode)
	}
}

func handle(c net.Conn, mode string) {
	defer c.Close()
	switch mode {
	case "sink":
		var n int64
		var err error
		if _, plain := c.(*net.TCPConn); plain {
			n, err = discard(c) // 256 KiB reads: fewer syscalls than io.Discard's 8 KiB
		} else {
			n, err = io.Copy(io.Discard, c)
		}
		if err == nil {
			fmt.Fprintf(c, "%d\n", n)
		}
	case "echo":
		_, _ = io.Copy(c, c)
	}
}

// discard reads r to EOF in 256 KiB reads and returns the byte count.
func discard(r io.Reader) (int64, error) {
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
