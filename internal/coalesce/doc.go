// Package coalesce wraps a server's connections so that small writes made
// one after another go to the kernel in fewer, larger system calls, and small
// reads are served from a read buffer.
//
// net/http's HTTP/2 server writes every DATA frame with a write system call
// of its own: its write buffer is 4 KiB, so a 16 KiB frame (the largest a
// peer that keeps HTTP/2's default SETTINGS_MAX_FRAME_SIZE accepts, grpc-go's
// clients among them) bypasses it, and it writes one frame at a time, waiting
// for each write to return before it frames the next. A Conn's Write copies
// the bytes into a buffer and returns; a goroutine of the Conn writes the
// buffer to the socket, and every byte written while that system call runs is
// taken by the next one. No byte waits for a later write or a timer: the
// writer starts with the first byte buffered and stops only when the buffer
// is empty, so a lone write goes out as soon as before, and what is coalesced
// is what would otherwise have queued behind a system call in progress.
//
// Reads: net/http's HTTP/2 server reads each frame's 9-byte header and then
// its payload with a read of their own from the connection (for cleartext
// HTTP/2; TLS buffers records itself). A Conn's Read fills a ReadBufferSize
// buffer with one system call and serves small Reads from it, so the frames
// of a request and the client's window updates and pings that arrive
// together cost one system call instead of two each. A Read of
// ReadBufferSize bytes or more with nothing buffered (a large DATA payload)
// goes to the connection directly, without a copy.
//
// Invariants:
//   - Bytes reach the wrapped connection in the order of the Writes that
//     accepted them; Writes, ReadFrom and CloseWrite run one at a time.
//   - At most BufferSize bytes are held; a Write waits while the buffer is
//     full. An idle connection holds no write buffer (they are pooled); the
//     read buffer is allocated at the first small Read and kept.
//   - A Write of DirectSize bytes or more waits for the buffer to be written
//     and is then written by the caller, without a copy.
//   - A failed write of the buffer makes every later Write fail
//     (ErrWriteFailed): the bytes it accepted are lost, so the stream is
//     broken, as after a failed write on any connection.
//   - What is buffered is written before the connection is shut down:
//     CloseWrite waits for it (at most CloseTimeout); Close returns at once
//     and the writer closes the wrapped connection once it has written the
//     buffer, within CloseTimeout, as the kernel does with a socket's send
//     buffer. So closing many connections to peers that do not read (as
//     http.Server.Close does, one after another) never waits on them.
//   - Deadlines are the wrapped connection's: a write deadline bounds the
//     buffer's system calls (a Write returns as soon as its bytes are
//     buffered, so a deadline that passes fails the next Write instead).
//     Setting a deadline that has already passed first lets the buffered
//     bytes be written (at most CloseTimeout): crypto/tls sets one right
//     after its close alert, and the last TLS records of a response (an
//     HTTP error for an upload the server refused) must not be dropped.
//     Close also closes the wrapped connection after CloseTimeout whatever
//     its deadline has become.
//
// SyscallConn is not forwarded: a write made through the raw connection
// would overtake buffered bytes.
package coalesce
