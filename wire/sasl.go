package wire

import (
	"fmt"
	"net"
	"slices"

	"github.com/emersion/go-sasl"
)

// maxSASLRounds bounds the challenge/response exchange: PLAIN and EXTERNAL
// need at most one round, a future mechanism a few.
const maxSASLRounds = 4

// serverMechs lists the mechanisms the server accepts on the connection as
// it is now: PLAIN only over TLS, from a local peer, or with
// AllowPlaintext; EXTERNAL only over TLS with a verified client
// certificate.
func (h *serverHandshake) mechs() []string {
	var m []string
	if h.cfg.Authenticate != nil && h.plainAllowed() {
		m = append(m, sasl.Plain)
	}
	if len(h.certNames) > 0 {
		m = append(m, sasl.External)
	}
	return m
}

func (h *serverHandshake) plainAllowed() bool {
	return h.tls || h.cfg.AllowPlaintext || isLocal(h.c.nc.RemoteAddr())
}

// isLocal reports whether a peer is on this host: a loopback IP, a Unix
// socket, or net.Pipe. Any other address, or an address type not known
// here, is remote.
func isLocal(a net.Addr) bool {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	case nil:
		return false
	}
	return a.Network() == "pipe"
}

// authenticate runs the server side of SASL, starting from the client's
// Auth, and returns the authenticated identity. Errors are *ProtoError
// with CodeAuth or CodeNotAdmin and a message fit for the client; detail
// meant only for the log is in logMsg.
func (h *serverHandshake) authenticate(a *Auth) (identity, logMsg string, err *ProtoError) {
	var srv sasl.Server
	var who string // the name the client claimed, for messages
	switch {
	case a.Mech == sasl.Plain && h.cfg.Authenticate != nil:
		if !h.plainAllowed() {
			return "", "PLAIN without TLS", protoErrf(CodeAuth,
				"PLAIN refused: the connection is not TLS and %v is not loopback; use TLS (tls_ca_file) or set allowplaintext on the replica", h.c.nc.RemoteAddr())
		}
		srv = sasl.NewPlainServer(func(authz, user, pass string) error {
			who = user
			if authz != "" && authz != user {
				logMsg = fmt.Sprintf("authorization identity %q differs from %q", authz, user)
				return errAuthFailed
			}
			if err := h.cfg.Authenticate(user, pass); err != nil {
				logMsg = err.Error()
				return errAuthFailed
			}
			identity = user
			return nil
		})
	case a.Mech == sasl.External && len(h.certNames) > 0:
		srv = sasl.NewExternalServer(func(authz string) error {
			who = authz
			if authz == "" {
				identity = h.certNames[0]
				return nil
			}
			if !slices.Contains(h.certNames, authz) {
				logMsg = fmt.Sprintf("certificate names %q, not %q", h.certNames, authz)
				return errAuthFailed
			}
			identity = authz
			return nil
		})
	default:
		return "", "mechanism not offered", protoErrf(CodeAuth, "SASL mechanism %q is not offered on this connection (offered: %q)", a.Mech, h.mechs())
	}

	var resp []byte
	if a.HasInitial {
		resp = append([]byte{}, a.Initial...)
	}
	for round := 0; ; round++ {
		chal, done, serr := srv.Next(resp)
		if serr != nil {
			if logMsg == "" {
				logMsg = serr.Error()
			}
			if who == "" {
				return "", logMsg, protoErrf(CodeAuth, "authentication failed (%s)", a.Mech)
			}
			return "", logMsg, protoErrf(CodeAuth, "authentication failed for %q", who)
		}
		if done {
			break
		}
		if round == maxSASLRounds {
			return "", "too many SASL rounds", protoErrf(CodeAuth, "authentication failed: too many SASL rounds")
		}
		if err := h.c.Send(&AuthChallenge{Data: chal}); err != nil {
			return "", err.Error(), protoErrf(CodeAuth, "authentication failed: %v", err)
		}
		if err := h.c.Flush(); err != nil {
			return "", err.Error(), protoErrf(CodeAuth, "authentication failed: %v", err)
		}
		r, rerr := expect[*AuthResponse](h.c)
		if rerr != nil {
			return "", rerr.Error(), protoErrf(CodeAuth, "authentication failed: %v", rerr)
		}
		resp = append([]byte{}, r.Data...)
	}
	if identity == "" {
		return "", "empty identity", protoErrf(CodeAuth, "authentication failed: empty identity")
	}
	if h.cfg.IsAdmin == nil || !h.cfg.IsAdmin(identity) {
		return "", "not an admin", protoErrf(CodeNotAdmin, "%q is not in admins on this replica", identity)
	}
	return identity, "", nil
}

var errAuthFailed = fmt.Errorf("authentication failed")

// clientSASL builds the client's SASL mechanism: PLAIN when a password is
// set, else EXTERNAL (the TLS client certificate speaks), unless cfg.Mech
// names one.
func clientSASL(cfg *ClientConfig) (sasl.Client, error) {
	user := cfg.AuthName
	if cfg.Realm != "" {
		user += "@" + cfg.Realm
	}
	mech := cfg.Mech
	if mech == "" {
		mech = sasl.External
		if cfg.Password != "" {
			mech = sasl.Plain
		}
	}
	switch mech {
	case sasl.Plain:
		if user == "" {
			return nil, fmt.Errorf("SASL PLAIN needs an authname (sync_authname)")
		}
		return sasl.NewPlainClient("", user, cfg.Password), nil
	case sasl.External:
		if cfg.TLS == nil {
			return nil, fmt.Errorf("SASL EXTERNAL needs TLS with a client certificate")
		}
		return sasl.NewExternalClient(user), nil
	}
	return nil, fmt.Errorf("unsupported SASL mechanism %q (PLAIN or EXTERNAL)", mech)
}
