// A value loaded by an async call: its data, error and whether it is loading.
import { ref, type Ref } from 'vue'

export interface Loaded<T> {
  data: Ref<T | null>
  error: Ref<string>
  loading: Ref<boolean>
  reload: () => Promise<void>
}

export function useAsync<T>(load: () => Promise<T>): Loaded<T> {
  const data = ref<T | null>(null) as Ref<T | null>
  const error = ref('')
  const loading = ref(false)
  async function reload(): Promise<void> {
    loading.value = true
    try {
      data.value = await load()
      error.value = ''
    } catch (e) {
      error.value = e instanceof Error ? e.message : String(e)
    } finally {
      loading.value = false
    }
  }
  void reload()
  return { data, error, loading, reload }
}

export function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e)
}
