// What a sendfile call or a zero-copy send can end with, and the flags of sendfile(2).

#if os(Linux)
  import SystemPackage

  /// The flags of ``sendfile(_:to:offset:count:headers:trailers:flags:pool:)``.
  public struct SendfileFlags: OptionSet, Sendable, Hashable {
    /// FreeBSD's `SF_*` bits.
    public let rawValue: Int32
    /// Makes flags from FreeBSD's `SF_*` bits.
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// `SF_NODISKIO`: never wait for a page that is not in the page cache. The call sends the
    /// resident pages before it, starts reading the missing ones (`POSIX_FADV_WILLNEED`,
    /// which does not wait), and ends with ``SendfileError/Code/busy``; a later call finds
    /// them resident.
    public static let noDiskIO = SendfileFlags(rawValue: 1)
  }

  /// FreeBSD's `SF_NODISKIO` (``SendfileFlags/noDiskIO``).
  public let SF_NODISKIO: Int32 = SendfileFlags.noDiskIO.rawValue

  /// Why a sendfile call or a zero-copy send ended before sending everything.
  ///
  /// Like FreeBSD's `sbytes`, ``bytesSent`` says how many bytes were queued on the socket
  /// before the call ended, headers and trailers included, whatever the error: those bytes
  /// will reach the peer and nothing else was queued, so a caller can resume exactly there.
  public struct SendfileError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What went wrong.
    public enum Code: Sendable, Equatable {
      /// No page could be mapped before anything was queued: the window was full on a
      /// non-blocking socket, or the host refused the mapping (`ENOBUFS`).
      case noBuffers
      /// A signal arrived while the call slept for a mapping or in a blocking send, or the
      /// task was cancelled (`EINTR`).
      case interrupted
      /// The peer is gone: `EPIPE`, or `ECONNRESET` (``SendfileError/errno`` says which). No
      /// `SIGPIPE` was raised.
      case brokenPipe
      /// A non-blocking socket (or one with a send timeout) has no room now (`EAGAIN`).
      case wouldBlock
      /// `SF_NODISKIO`: the next page is not in the page cache (`EBUSY`).
      case busy
      /// A negative offset or count, or a descriptor that is not a connected stream socket.
      case invalidArgument
      /// The socket was closed: before the call, or while a zero-copy send waited for its
      /// completion.
      case closed
      /// Another error from the host; ``SendfileError/errno`` has it.
      case system
    }

    /// What went wrong.
    public var code: Code
    /// Bytes queued on the socket by the call before it ended (headers, file, trailers).
    public var bytesSent: Int
    /// The host's error number behind ``code``, where there is one.
    public var errno: Errno?

    /// Makes an error.
    public init(_ code: Code, bytesSent: Int, errno: Errno? = nil) {
      self.code = code
      self.bytesSent = bytesSent
      self.errno = errno
    }

    /// The error a failed send's `errno` means, with the bytes queued before it.
    static func sending(_ e: Errno, bytesSent: Int) -> SendfileError {
      switch e {
      case .brokenPipe, .connectionReset: SendfileError(.brokenPipe, bytesSent: bytesSent, errno: e)
      case .resourceTemporarilyUnavailable:
        SendfileError(.wouldBlock, bytesSent: bytesSent, errno: e)
      case .interrupted: SendfileError(.interrupted, bytesSent: bytesSent, errno: e)
      case .notSocket, .badFileDescriptor, .socketNotConnected:
        SendfileError(.invalidArgument, bytesSent: bytesSent, errno: e)
      default: SendfileError(.system, bytesSent: bytesSent, errno: e)
      }
    }

    /// What went wrong, its errno, and the bytes sent, in a sentence.
    public var description: String {
      let what: String
      switch code {
      case .noBuffers: what = "no buffers: no page could be mapped"
      case .interrupted: what = "interrupted"
      case .brokenPipe: what = "broken pipe: the peer closed the connection"
      case .wouldBlock: what = "would block"
      case .busy: what = "busy: a page is not resident (SF_NODISKIO)"
      case .invalidArgument: what = "invalid argument"
      case .closed: what = "the socket was closed"
      case .system: what = "system error"
      }
      let detail = errno.map { " (\($0))" } ?? ""
      return "\(what)\(detail) after \(bytesSent) bytes sent"
    }
  }

  /// Why a socket could not be made, connected, bound or read: the operation and the errno.
  public struct SocketError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What was being done, e.g. `connect 127.0.0.1:9`.
    public var operation: String
    /// The host's error number.
    public var errno: Errno

    /// Makes an error.
    public init(_ operation: String, _ errno: Errno) {
      self.operation = operation
      self.errno = errno
    }

    /// `operation: errno`, e.g. `connect 127.0.0.1:9: Connection refused`.
    public var description: String { "\(operation): \(errno)" }
  }
#endif
