// Command notaplugin is a valid wasip1 program that is not a wagg plugin:
// it has no ABI exports. Tests upload it to check the refusal.
package main

import "fmt"

func main() { fmt.Println("hello") }
