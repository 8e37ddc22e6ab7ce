// Package server is the replica daemon's protocol side (`spoolsync
// server`): it accepts wire connections, authenticates masters through
// wire's handshake, and applies their batches to a replica.Store.
//
// # One connection
//
// After the handshake the session finds the master's tree (Options.Root,
// or with TreeFor one tree per identity) and settles epochs (package
// fence): a master of a lower epoch than the tree's is refused ("fenced");
// a higher one is adopted (failback: the tree becomes its replica). Every
// batch checks the epoch again, so a promotion fences a master that is
// still connected. Then the loop answers, in the order received:
//
//	PositionRequest → Position{AppliedSeq, Interrupted, the tree's epoch as found}
//	Offer           → Lacks (Store.Lacks: index lookup and lstat)
//	ManifestRequest → ManifestEntry… ManifestEnd (Store.Manifest)
//	BatchBegin … BatchEnd → Ack, once the batch is committed (durable)
//	Ping            → Pong
//
// The replica's progress is keyed by source = identity + "/" + channel:
// the authenticated SASL identity and the batch's channel ("" allowed),
// so two masters or two channels never share a position.
//
// # Batches
//
// As a batch arrives, the content of its inline puts is staged: written
// to temp files with its attributes (Store.Stage, which takes no lock),
// while the master still reads and sends the rest; its other ops and their
// data are spooled (memory up to 64 MiB, then an unlinked file in the
// spool dir). Only at BatchEnd is Store.Begin called: one syncfs makes the
// staged files durable, then every op is applied in order from the spool
// (staged files renamed into place), then the batch is committed and
// acked. That part runs in the background: the connection reads (and
// stages) the next batch meanwhile, so a client may send a batch before
// the last one is acknowledged; the next apply starts when the last one
// ended, and acks go out in order. Offers are answered at once, even while
// a batch is applied (the answer may then be stale: the resync resends a
// refused batch with its content); every other request waits for the
// apply. Staged files not put in place (a refused batch, a client gone
// mid-batch) are removed. The Store applies one batch at a time for the
// whole replica; staging and spooling keep that lock for the time of a
// local apply, not for the time a (possibly slow) client takes to send the
// batch, so one slow master does not stall another. Batches of different
// connections are still applied one after another: the replica's apply
// rate is shared by all masters.
//
// Before applying, the Puts by GUID are checked against the index (unless
// an earlier Put of the batch carries that GUID inline): a batch naming
// content the replica lacks is refused with code lacking-guid before it
// changes anything. A batch at or below the applied seq of its source is
// drained and acked without being applied (a resend after a lost ack).
//
// Any failure to apply aborts the batch, reports it to the client in an
// Error frame (code apply, or badpath for a path that would leave the
// root, or lacking-guid, with the batch seq and the path) and closes the
// connection; the master reconnects and resends from its position.
//
// # Limits (what a peer can take)
//
// Before authentication (guard.go): at most MaxHandshakes connections in
// the handshake (three quarters for addresses that failed lately),
// MaxHandshakesPerAddr per source IP, refused unheard over that; wire
// accepts only handshake-sized frames until AuthOK. An address with more
// than FreeFailures failed logins in a row waits 1 s, 2 s, 4 s… up to
// MaxLoginBackoff before its next connection is heard; a connection
// refused for its address is held up to Tarpit first. Password checks run
// at most maxPasswordChecks at once, one place kept for urgent ones: a
// login from an address that has not failed lately and has nothing else
// in the handshake (passwd.go, Passwords).
//
// After it (limits.go): an epoch is adopted only one above the tree's, or
// Options.AcceptEpoch (session.go). A batch has at most MaxBatchOps ops
// and MaxBatchBytes of content (its first op with content may exceed that
// alone), both announced in Welcome; no Put, WriteRanges or Truncate
// beyond MaxFileSize; content is staged or spooled only while
// MinFreeSpace stays free on its filesystem. A batch over a limit, or
// whose staging or spooling fails (a full disk), is refused: the rest of
// it is read and dropped, so that the master, still sending, then reads
// the Error frame (code toolarge or apply) saying why. Applies take turns
// across identities (turns), so one master delays another by one batch at
// most. A manifest runs under a context that ends when the server shuts
// down or the client hangs up (watchGone), and hashes no file over
// MaxFileSize: no request holds a CPU after its client has gone.
package server
