# Fails the build when a pure-layer file includes libuv or OpenSSL
# (STYLE.md §1: the pure layer links only libc and inih).
file(GLOB pure_files
    ${SRC}/src/buf.c ${SRC}/src/config.c ${SRC}/src/error.c
    ${SRC}/src/proto*.c ${SRC}/src/proxy_protocol.c ${SRC}/src/http.c
    ${SRC}/src/dialog.c ${SRC}/include/mailproxy/http.h
    ${SRC}/include/mailproxy/dialog.h
    ${SRC}/include/mailproxy/buf.h ${SRC}/include/mailproxy/config.h
    ${SRC}/include/mailproxy/error.h ${SRC}/include/mailproxy/proto*.h
    ${SRC}/include/mailproxy/proxy_protocol.h)
foreach(f IN LISTS pure_files)
	file(STRINGS ${f} bad REGEX "#[ \t]*include[ \t]*<(uv\\.h|openssl/)")
	if(bad)
		message(FATAL_ERROR "${f} is in the pure layer but includes: ${bad}")
	endif()
endforeach()
