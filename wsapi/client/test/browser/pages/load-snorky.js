// Loads /snorky.js from the Snorky server (another origin), and SockJS
// when the browser has no WebSocket (the tests remove it).
window.TRANSPORT = window.WebSocket ? 'websocket' : 'sockjs';
if (!window.WebSocket) {
  document.write('<script src="/sockjs.min.js"><\/script>');
}
document.write('<script src="' + TEST.front + '/snorky.js"><\/script>');
// socketArgs: the socket class and URL for this browser.
window.socketArgs = function () {
  return window.WebSocket ? [WebSocket, TEST.ws] : [SockJS, TEST.sockjs];
};
