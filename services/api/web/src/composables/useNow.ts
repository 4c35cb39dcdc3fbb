// The current time, ticking once a second while a component that uses it is mounted.
import { onMounted, onUnmounted, ref } from 'vue'

export function useNow(ms = 1000) {
  const now = ref(Date.now())
  let timer = 0
  onMounted(() => { timer = window.setInterval(() => (now.value = Date.now()), ms) })
  onUnmounted(() => window.clearInterval(timer))
  return now
}
