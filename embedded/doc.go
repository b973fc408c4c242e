// Package embedded runs a NATS server with JetStream inside the current
// process. It is the product's default deployment (one process, no external
// broker) and the server that tests start.
//
// # Starting and stopping
//
// [Start] validates a [Config], prepares the data directory, starts the
// server and waits until it accepts connections. It returns either a ready
// [*Server] or an error, never both; on error nothing is left running.
// [Server.Shutdown] stops the server and returns only after it has fully
// stopped: listeners closed, client connections dropped, JetStream stores
// flushed and closed, and the server's goroutines finished. Shutdown may be
// called more than once and from several goroutines at the same time.
//
// # Guarantees
//
//   - Durability. By default the server runs JetStream with SyncAlways: every
//     message is written and fsynced to the data directory before JetStream
//     acknowledges it, so an acknowledged write survives a crash of the
//     process or of the machine, as far as the disk honours fsync. Setting [Config.NoSync] trades this for speed: the server
//     then fsyncs periodically (every two minutes by default), and writes
//     acknowledged since the last fsync can be lost if the machine or
//     operating system fails.
//   - Persistence across restarts. State lives only in [Config.DataDir].
//     Starting a new server on the same directory after Shutdown recovers the
//     streams, key-value buckets and messages stored there.
//   - One server per data directory. A running server holds a lock on its
//     directory (flock, on Unix; dropped when its process dies), and [Start]
//     on a directory another server holds fails, naming it.
//   - Errors name the cause. A port that is already taken is reported as
//     "embedded: listen on HOST:PORT: ..." and wraps the system error
//     (errors.Is(err, syscall.EADDRINUSE) holds on Linux); a data directory that cannot
//     be created or written is reported with its path. Invalid configuration
//     is reported by [Config.Validate] with the name of the offending field.
//   - No global state. The package has no package-level variables and no init
//     side effects; the server installs no signal handlers. Several servers
//     can run in one process provided they use different ports and data
//     directories.
//
// # Limits
//
//   - [Config.DataDir] is required. The package never falls back to a
//     directory under the system temporary directory, where unrelated servers
//     would silently share one store. Two servers must not use the same data
//     directory at the same time.
//   - [Config.Port] 0 means the standard NATS port 4222, the product default.
//     Port -1 picks a random free port, which is what tests want; read it
//     back with [Server.Addr] or [Server.ClientURL].
//   - With [Config.DontListen] the server opens no TCP listener at all. Only
//     connections made with [Server.Connect] reach it, and [Server.Addr] and
//     [Server.ClientURL] return "".
//   - The server has no monitoring endpoint. By default it runs
//     standalone, admits any client that can reach it and speaks plain
//     TCP; it is meant to be reached from the same host, and the default
//     Host is the loopback address 127.0.0.1.
//   - [Config.Auth] can require a user and password, a token or nkeys, and
//     [Config.TLS] can require TLS and client certificates. Every client
//     that authenticates has full rights on every subject: there are no
//     per-user permissions. Connections made with [Server.Connect] go
//     through the same authentication (but not TLS, since they never leave
//     the process).
//   - The server's own log lines go to [Config.Logger] when it is set and
//     are discarded otherwise.
//
// # Clustering
//
// [Config.Cluster] joins the server to a NATS cluster with JetStream
// clustering, so that a key-value bucket can be created with Replicas 3
// (or 5) and survive the loss of a server. Each server needs a
// [Config.Name] unique in the cluster and stable across restarts, the
// same [Cluster.Name], and routes to the others (best: the same full
// list on every server, its own address included). [Start] returns once
// the server listens for clients and routes; it does not wait for the
// cluster to form, which needs the other servers. Until a JetStream meta
// leader is elected, and until enough servers have joined for the
// replicas asked for, JetStream API calls fail (for example with "no
// suitable peers for placement" or a timeout): retry them.
// [Server.ClusterURL] gives the route URL, with the actual port when
// [Cluster.Port] is [RandomPort].
//
// Routes are plain TCP, unauthenticated unless [Cluster.User] and
// [Cluster.Password] are set (the same on every server); route TLS is not
// supported. Whoever reaches a route port can join as a server and read
// every message: keep routes on a private network.
package embedded
