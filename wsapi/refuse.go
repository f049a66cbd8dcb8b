package wsapi

import (
	"fmt"
	"net/http"
)

// refuse answers a handshake the upgrader refused. A refused Origin gets
// 403 with a body that says which setting allows it, because the browser
// shows only the status and a developer reads the body in the network
// panel or with curl.
func refuse(w http.ResponseWriter, r *http.Request, status int, reason error) {
	w.Header().Set("Sec-Websocket-Version", "13")
	if status == http.StatusForbidden {
		origin := r.Header.Get("Origin")
		http.Error(w, fmt.Sprintf("origin %q is not allowed: add it to the server's frontend.allowed_origins "+
			"(e.g. allowed_origins: [%q]), or serve the page from the WebSocket's own host:port (%s)", origin, origin, r.Host), status)
		return
	}
	http.Error(w, http.StatusText(status)+": "+reason.Error(), status)
}
